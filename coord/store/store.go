// Package store keeps the coordination server's state — nodes, their stable overlay addresses,
// networks and memberships — in one SQLite file (modernc.org/sqlite, pure Go). It knows nothing about
// the control protocol or sessions; the SQL is kept plain so another database can follow.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors.
var (
	// ErrNotFound is returned when a node or network does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating something that already exists.
	ErrExists = errors.New("already exists")
	// ErrNotMember is returned when removing a node from a network it is not in.
	ErrNotMember = errors.New("not a member")
	// ErrPoolExhausted is returned when no overlay address is left for a new node.
	ErrPoolExhausted = errors.New("address pool exhausted")
)

// Pools are the prefixes overlay addresses are allocated from. A node's IPv4 and IPv6 share one host
// index: index i gives V4.Addr()+i and V6.Addr()+i.
type Pools struct {
	V4 netip.Prefix // e.g. 100.64.0.0/10
	V6 netip.Prefix // e.g. fd7a:7761:7272::/48
}

// Node is a registered node.
type Node struct {
	Key        []byte // Ed25519 public key
	Name       string
	IPv4, IPv6 netip.Addr
	CreatedAt  time.Time
	LastSeen   time.Time
}

// Network is a named group of nodes that may reach each other.
type Network struct {
	Name         string
	PasswordHash string // argon2id (see HashPassword); "" = no password
	Owner        []byte
	CreatedAt    time.Time
}

// PeerRow is a node that shares at least one network with another, and the shared networks.
type PeerRow struct {
	Node
	Networks []string // sorted
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db       *sql.DB
	pools    Pools
	maxIndex int64 // largest usable host index
}

var migrations = []string{
	// 1: the first schema.
	`CREATE TABLE nodes (
		key BLOB PRIMARY KEY,
		name TEXT NOT NULL,
		ip_index INTEGER NOT NULL UNIQUE,
		created_at INTEGER NOT NULL,
		last_seen INTEGER NOT NULL
	);
	CREATE TABLE networks (
		name TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		owner BLOB NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE members (
		network TEXT NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
		key BLOB NOT NULL REFERENCES nodes(key) ON DELETE CASCADE,
		joined_at INTEGER NOT NULL,
		PRIMARY KEY (network, key)
	);
	CREATE INDEX members_by_key ON members(key);`,
}

// Open opens (creating if needed) the database at path and brings its schema up to date.
func Open(path string, pools Pools) (*Store, error) {
	if !pools.V4.Addr().Is4() || !pools.V6.Addr().Is6() || pools.V6.Addr().Is4In6() {
		return nil, errors.New("store: pools need an IPv4 and an IPv6 prefix")
	}
	if pools.V4.Bits() > 30 {
		return nil, fmt.Errorf("store: IPv4 pool %v too small (at most /30)", pools.V4)
	}
	pools.V4, pools.V6 = pools.V4.Masked(), pools.V6.Masked()
	// Host indexes: 1 .. 2^(32-bits)-2 (skip network and broadcast addresses), also bounded by V6.
	maxIndex := int64(1)<<(32-pools.V4.Bits()) - 2
	if hb := 128 - pools.V6.Bits(); hb < 32 && int64(1)<<hb-1 < maxIndex {
		maxIndex = int64(1)<<hb - 1
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps transactions simple.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, pools: pools, maxIndex: maxIndex}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("store: database schema version %d is newer than this server (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migration %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: migration %d: %w", i+1, err)
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) addrs(index int64) (v4, v6 netip.Addr) {
	return addAddr(s.pools.V4.Addr(), index), addAddr(s.pools.V6.Addr(), index)
}

func addAddr(base netip.Addr, n int64) netip.Addr {
	b := base.AsSlice()
	v := new(big.Int).SetBytes(b)
	v.Add(v, big.NewInt(n))
	out := v.FillBytes(make([]byte, len(b)))
	a, _ := netip.AddrFromSlice(out)
	return a
}

// UpsertNode registers a node on first sight, allocating the lowest free host index, or updates its
// name and last-seen time. A key keeps its addresses for as long as the database lives.
func (s *Store) UpsertNode(ctx context.Context, key []byte, name string) (Node, error) {
	if err := ValidNodeName(name); err != nil {
		return Node{}, err
	}
	now := time.Now().Unix()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Node{}, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET name = ?, last_seen = ? WHERE key = ?`, name, now, key)
	if err != nil {
		return Node{}, fmt.Errorf("update node: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// The lowest free index: 1 if free, else the smallest used index whose successor is free.
		var idx int64
		err := tx.QueryRowContext(ctx, `SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM nodes WHERE ip_index = 1) THEN 1 ELSE
			(SELECT MIN(ip_index) + 1 FROM nodes a WHERE NOT EXISTS (SELECT 1 FROM nodes b WHERE b.ip_index = a.ip_index + 1)) END`).Scan(&idx)
		if err != nil {
			return Node{}, fmt.Errorf("allocate address: %w", err)
		}
		if idx > s.maxIndex {
			return Node{}, ErrPoolExhausted
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (key, name, ip_index, created_at, last_seen) VALUES (?, ?, ?, ?, ?)`,
			key, name, idx, now, now); err != nil {
			return Node{}, fmt.Errorf("insert node: %w", err)
		}
	}
	n, err := scanNode(tx.QueryRowContext(ctx, `SELECT key, name, ip_index, created_at, last_seen FROM nodes WHERE key = ?`, key), s)
	if err != nil {
		return Node{}, err
	}
	return n, tx.Commit()
}

type scanner interface{ Scan(...any) error }

func scanNode(r scanner, s *Store) (Node, error) {
	var n Node
	var idx, created, seen int64
	if err := r.Scan(&n.Key, &n.Name, &idx, &created, &seen); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Node{}, ErrNotFound
		}
		return Node{}, err
	}
	n.IPv4, n.IPv6 = s.addrs(idx)
	n.CreatedAt, n.LastSeen = time.Unix(created, 0), time.Unix(seen, 0)
	return n, nil
}

// Node returns the node with the given key, or ErrNotFound.
func (s *Store) Node(ctx context.Context, key []byte) (Node, error) {
	return scanNode(s.db.QueryRowContext(ctx, `SELECT key, name, ip_index, created_at, last_seen FROM nodes WHERE key = ?`, key), s)
}

// CreateNetwork creates a network owned by owner, who becomes its first member. ErrExists if taken.
func (s *Store) CreateNetwork(ctx context.Context, name, passwordHash string, owner []byte) error {
	if err := ValidNetworkName(name); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now().Unix()
	if _, err := tx.ExecContext(ctx, `INSERT INTO networks (name, password_hash, owner, created_at) VALUES (?, ?, ?, ?)`,
		name, passwordHash, owner, now); err != nil {
		if strings.Contains(err.Error(), "UNIQUE") || strings.Contains(err.Error(), "PRIMARY KEY") {
			return ErrExists
		}
		return fmt.Errorf("create network: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?)`, name, owner, now); err != nil {
		return fmt.Errorf("add owner: %w", err)
	}
	return tx.Commit()
}

// Network returns the named network, or ErrNotFound.
func (s *Store) Network(ctx context.Context, name string) (Network, error) {
	var n Network
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT name, password_hash, owner, created_at FROM networks WHERE name = ?`, name).
		Scan(&n.Name, &n.PasswordHash, &n.Owner, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Network{}, ErrNotFound
	}
	n.CreatedAt = time.Unix(created, 0)
	return n, err
}

// AddMember adds a node to a network; adding an existing member is a no-op. ErrNotFound if the
// network does not exist.
func (s *Store) AddMember(ctx context.Context, network string, key []byte) error {
	if _, err := s.Network(ctx, network); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		network, key, time.Now().Unix())
	if err != nil {
		return fmt.Errorf("add member: %w", err)
	}
	return nil
}

// RemoveMember removes a node from a network, or returns ErrNotMember.
func (s *Store) RemoveMember(ctx context.Context, network string, key []byte) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM members WHERE network = ? AND key = ?`, network, key)
	if err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotMember
	}
	return nil
}

// NetworksOf lists the networks a node is in, sorted.
func (s *Store) NetworksOf(ctx context.Context, key []byte) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT network FROM members WHERE key = ? ORDER BY network`, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Members lists the nodes of a network, sorted by name.
func (s *Store) Members(ctx context.Context, network string) ([]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT n.key, n.name, n.ip_index, n.created_at, n.last_seen
		FROM members m JOIN nodes n ON n.key = m.key WHERE m.network = ? ORDER BY n.name, n.key`, network)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := scanNode(rows, s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Peers lists every other node that shares at least one network with key, once each, with the shared
// networks, sorted by name. One query, whatever the number of networks.
func (s *Store) Peers(ctx context.Context, key []byte) ([]PeerRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT n.key, n.name, n.ip_index, n.created_at, n.last_seen, theirs.network
		FROM members mine
		JOIN members theirs ON theirs.network = mine.network AND theirs.key != mine.key
		JOIN nodes n ON n.key = theirs.key
		WHERE mine.key = ?
		ORDER BY n.name, n.key, theirs.network`, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PeerRow
	for rows.Next() {
		var r PeerRow
		var idx, created, seen int64
		var network string
		if err := rows.Scan(&r.Key, &r.Name, &idx, &created, &seen, &network); err != nil {
			return nil, err
		}
		if l := len(out); l > 0 && string(out[l-1].Key) == string(r.Key) {
			out[l-1].Networks = append(out[l-1].Networks, network)
			continue
		}
		r.IPv4, r.IPv6 = s.addrs(idx)
		r.CreatedAt, r.LastSeen = time.Unix(created, 0), time.Unix(seen, 0)
		r.Networks = []string{network}
		out = append(out, r)
	}
	for i := range out {
		sort.Strings(out[i].Networks)
	}
	return out, rows.Err()
}

// ValidNetworkName checks a network name: 1-64 characters of a-z, 0-9, '-', '_' and '.'.
func ValidNetworkName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("invalid network name %q: must be 1-64 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid network name %q: use lower-case letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// ValidNodeName checks a node name: a DNS label, 1-63 characters of a-z, 0-9 and '-', not starting or
// ending with '-'.
func ValidNodeName(name string) error {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("invalid node name %q: must be a DNS label of 1-63 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("invalid node name %q: use lower-case letters, digits and '-'", name)
		}
	}
	return nil
}
