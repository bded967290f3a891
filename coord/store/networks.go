package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"
)

// CreateNetwork creates a network owned by owner, who becomes its first member, in one transaction.
// passwordHash is stored as given ("" for none). It returns ErrExists if the name is taken, and an
// error wrapping ErrNotFound if owner is not a registered node.
func (s *Store) CreateNetwork(ctx context.Context, name, passwordHash string, owner []byte) error {
	if err := ValidNetworkName(name); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create network: %w", err)
	}
	defer tx.Rollback()
	if err := nodeExists(ctx, tx, owner); err != nil {
		return fmt.Errorf("create network %q: owner: %w", name, err)
	}
	now := time.Now().Unix()
	res, err := tx.ExecContext(ctx, `INSERT INTO networks (name, password_hash, owner, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, name, passwordHash, owner, now)
	if err != nil {
		return fmt.Errorf("create network %q: %w", name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create network %q: %w", name, err)
	} else if n == 0 {
		return fmt.Errorf("network %q: %w", name, ErrExists)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?)`, name, owner, now); err != nil {
		return fmt.Errorf("create network %q: add owner: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create network %q: %w", name, err)
	}
	return nil
}

// nodeExists returns nil if key is a registered node, ErrNotFound if not.
func nodeExists(ctx context.Context, tx *txn, key []byte) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM nodes WHERE key = ?`, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// Network returns the named network, or an error wrapping ErrNotFound.
func (s *Store) Network(ctx context.Context, name string) (Network, error) {
	var n Network
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT name, password_hash, owner, created_at, approval, locked, is_open FROM networks WHERE name = ?`, name).
		Scan(&n.Name, &n.PasswordHash, &n.Owner, &created, &n.Approval, &n.Locked, &n.Open)
	if errors.Is(err, sql.ErrNoRows) {
		return Network{}, fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Network{}, fmt.Errorf("network %q: %w", name, err)
	}
	n.CreatedAt = time.Unix(created, 0).UTC()
	return n, nil
}

// AddMember adds a node to a network; adding an existing member changes nothing. It returns an error
// wrapping ErrNotFound if the network or the node does not exist, and a *NameTakenError if another
// member has the node's name. It does not check passwords.
func (s *Store) AddMember(ctx context.Context, network string, key []byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("join %q: %w", network, err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM networks WHERE name = ?`, network).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("join %q: %w", network, err)
	}
	if err := nodeExists(ctx, tx, key); err != nil {
		return fmt.Errorf("join %q: node: %w", network, err)
	}
	if err := nameFreeIn(ctx, tx, network, key); err != nil {
		return fmt.Errorf("join %q: %w", network, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		network, key, time.Now().Unix()); err != nil {
		return fmt.Errorf("join %q: %w", network, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("join %q: %w", network, err)
	}
	return nil
}

// RemoveMember removes a node from a network. It returns an error wrapping ErrNotMember if the node
// is not in it, including when the network does not exist. The network stays even when it empties.
func (s *Store) RemoveMember(ctx context.Context, network string, key []byte) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM members WHERE network = ? AND key = ?`, network, key)
	if err != nil {
		return fmt.Errorf("leave %q: %w", network, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("leave %q: %w", network, err)
	}
	if n == 0 {
		return fmt.Errorf("leave %q: %w", network, ErrNotMember)
	}
	return nil
}

// NetworksOf lists the names of the networks a node is in, sorted. An unknown node is in none.
func (s *Store) NetworksOf(ctx context.Context, key []byte) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT network FROM members WHERE key = ?`, key)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list networks: %w", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	// Sorted here, not by ORDER BY: byte order regardless of the database's collation.
	sort.Strings(out)
	return out, nil
}

// Members lists the nodes of a network, sorted by name (then key). An unknown network has none.
func (s *Store) Members(ctx context.Context, network string) ([]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+`
		FROM members m JOIN nodes n ON n.key = m.key WHERE m.network = ?`, network)
	if err != nil {
		return nil, fmt.Errorf("list members of %q: %w", network, err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := s.scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list members of %q: %w", network, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list members of %q: %w", network, err)
	}
	sort.Slice(out, func(i, j int) bool { return nodeLess(out[i], out[j]) })
	return out, nil
}

func nodeLess(a, b Node) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return string(a.Key) < string(b.Key)
}

// Peers lists every other node that shares at least one network with key, once each, sorted by name
// (then key), with the shared networks. It is one query whatever the number of networks; an unknown
// key has no peers.
func (s *Store) Peers(ctx context.Context, key []byte) ([]PeerRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+`, theirs.network
		FROM members mine
		JOIN members theirs ON theirs.network = mine.network AND theirs.key <> mine.key
		JOIN nodes n ON n.key = theirs.key
		WHERE mine.key = ?`, key)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	defer rows.Close()
	byKey := make(map[string]int) // key -> index in out
	var out []PeerRow
	for rows.Next() {
		var network string
		n, err := s.scanNode(rows, &network)
		if err != nil {
			return nil, fmt.Errorf("list peers: %w", err)
		}
		if i, ok := byKey[string(n.Key)]; ok {
			out[i].Networks = append(out[i].Networks, network)
			continue
		}
		byKey[string(n.Key)] = len(out)
		out = append(out, PeerRow{Node: n, Networks: []string{network}})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return nodeLess(out[i].Node, out[j].Node) })
	for i := range out {
		sort.Strings(out[i].Networks)
	}
	return out, nil
}
