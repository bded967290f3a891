package store

import (
	"context"
	"fmt"
	"time"
)

// Join requests (pending joins) as their sources and the networks' owners see them: each records
// when it was made and the source range it came from, so the caller can cap what one source has
// waiting and let old requests expire; an owner gets the requests of all its networks at once.

// SetOpen sets whether the network takes anyone without a password or approval.
func (s *Store) SetOpen(ctx context.Context, network string, open bool) error {
	return s.setNetwork(ctx, network, "is_open", open)
}

// AddJoinRequest records a join awaiting approval, made at `at` from source (a range such as
// "192.0.2.7/32"; "" = not counted per source). Recording it again changes nothing: the first
// request's time and source stay.
func (s *Store) AddJoinRequest(ctx context.Context, network string, key []byte, source string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO pending (network, key, requested_at, source) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		network, key, at.Unix(), source); err != nil {
		return fmt.Errorf("record pending join to %q: %w", network, err)
	}
	return nil
}

// CountPendingFrom returns how many joins from source wait for approval in network, and in all
// networks.
func (s *Store) CountPendingFrom(ctx context.Context, network, source string) (inNetwork, overall int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM pending WHERE network = ? AND source = ?), (SELECT COUNT(*) FROM pending WHERE source = ?)`,
		network, source, source).Scan(&inNetwork, &overall)
	if err != nil {
		return 0, 0, fmt.Errorf("count pending joins from %s: %w", source, err)
	}
	return inNetwork, overall, nil
}

// ExpirePending drops the joins that have waited since before `before`, and returns the owners of
// the networks they were for (each once).
func (s *Store) ExpirePending(ctx context.Context, before time.Time) ([][]byte, error) {
	var owners [][]byte
	err := s.inTx(ctx, "expire pending joins", func(tx *txn) error {
		var err error
		owners, err = keysOf(tx.QueryContext(ctx, `SELECT DISTINCT w.owner FROM pending p JOIN networks w ON w.name = p.network WHERE p.requested_at < ?`, before.Unix()))
		if err != nil {
			return err
		}
		if len(owners) == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM pending WHERE requested_at < ?`, before.Unix())
		return err
	})
	return owners, err
}

// DenyAll drops every pending join to network and returns how many there were.
func (s *Store) DenyAll(ctx context.Context, network string) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM pending WHERE network = ?`, network)
	if err != nil {
		return 0, fmt.Errorf("drop pending joins to %q: %w", network, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("drop pending joins to %q: %w", network, err)
	}
	return int(n), nil
}

// JoinRequest is a pending join as its network's owner sees it.
type JoinRequest struct {
	Network string
	Key     []byte
	Name    string
	At      time.Time // second precision
}

// JoinRequestsFor lists the pending joins to the networks owner owns, oldest first (then by network
// and name), at most limit of them, and how many there are in all.
func (s *Store) JoinRequestsFor(ctx context.Context, owner []byte, limit int) ([]JoinRequest, int, error) {
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pending p JOIN networks w ON w.name = p.network WHERE w.owner = ?`, owner).
		Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count join requests: %w", err)
	}
	if total == 0 {
		return nil, 0, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT p.network, p.key, n.name, p.requested_at
		FROM pending p JOIN networks w ON w.name = p.network JOIN nodes n ON n.key = p.key
		WHERE w.owner = ? ORDER BY p.requested_at, p.network, n.name LIMIT ?`, owner, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list join requests: %w", err)
	}
	defer rows.Close()
	var out []JoinRequest
	for rows.Next() {
		var r JoinRequest
		var at int64
		if err := rows.Scan(&r.Network, &r.Key, &r.Name, &at); err != nil {
			return nil, 0, fmt.Errorf("list join requests: %w", err)
		}
		r.At = time.Unix(at, 0).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list join requests: %w", err)
	}
	return out, total, nil
}
