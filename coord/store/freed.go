package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Addresses outlive their nodes for a while. A deleted node's host index is recorded in
// freed_addresses with the time; the allocator skips it until the address quarantine has passed, so
// known_hosts entries and firewall rules that pin a departed node's IP do not point at a newcomer
// seconds later. A node whose first login never completed (LoginDone false: refused after
// registration, or left by a crash) was never anyone's peer: its address is free at once.

// DefaultAddressQuarantine is how long warren-coord keeps a freed address out of use unless told
// otherwise (--address-quarantine).
const DefaultAddressQuarantine = 7 * 24 * time.Hour

// SetAddressQuarantine sets how long a freed overlay address stays out of use; 0 (the default of a
// new Store) hands it out again at once. Safe to call while the store is in use.
func (s *Store) SetAddressQuarantine(d time.Duration) { s.quarantine.Store(int64(max(d, 0))) }

// now is the store's clock.
func (s *Store) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

// allocIndex returns the lowest host index that no node has and that is not in quarantine, and
// forgets quarantine records that have expired. The candidates are 1 and one past every index in
// use or recorded as freed: the lowest free index f is 1 or f-1 is taken, so f is among them. Every
// probe uses a unique index (nodes.ip_index, freed_addresses' primary key).
func (s *Store) allocIndex(ctx context.Context, tx *txn) (int64, error) {
	cutoff := s.now().Add(-time.Duration(s.quarantine.Load())).UnixMilli()
	if _, err := tx.ExecContext(ctx, `DELETE FROM freed_addresses WHERE freed_at <= ?`, cutoff); err != nil {
		return 0, fmt.Errorf("forget expired quarantine: %w", err)
	}
	// Fast path, the usual case: no gap below the highest index taken (by a node or a quarantine
	// record; the two sets are disjoint), so the lowest free one is the next. Counting walks one
	// index in order, where the search below probes another index once per node: at 10,000 nodes
	// that search was a fifth of the coord's CPU while nodes logged in, and it grows with every node.
	var taken, top int64
	if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM nodes) + (SELECT COUNT(*) FROM freed_addresses),
			(SELECT COALESCE(MAX(m.i), 0) FROM (SELECT MAX(ip_index) AS i FROM nodes UNION ALL SELECT MAX(ip_index) FROM freed_addresses) m)`).
		Scan(&taken, &top); err != nil {
		return 0, err
	}
	if taken == top {
		return top + 1, nil
	}
	var idx sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT MIN(c.i) FROM (
			SELECT 1 AS i
			UNION ALL SELECT ip_index + 1 FROM nodes
			UNION ALL SELECT ip_index + 1 FROM freed_addresses
		) c
		WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.ip_index = c.i)
		AND NOT EXISTS (SELECT 1 FROM freed_addresses f WHERE f.ip_index = c.i)`).Scan(&idx)
	if err != nil {
		return 0, err
	}
	if !idx.Valid {
		return 0, errors.New("no candidate index") // cannot happen: the largest candidate is free
	}
	return idx.Int64, nil
}

// deleteNodeTx deletes the node with the given key if it matches cond (SQL over the nodes table
// aliased n, with args; "" = any), memberships included, and records its host index as freed unless
// its first login never completed. It reports whether it deleted the node.
func (s *Store) deleteNodeTx(ctx context.Context, tx *txn, key []byte, cond string, args ...any) (bool, error) {
	q := `SELECT n.ip_index, n.login_done FROM nodes n WHERE n.key = ?`
	if cond != "" {
		q += ` AND (` + cond + `)`
	}
	var idx int64
	var done bool
	if err := tx.QueryRowContext(ctx, q, append([]any{key}, args...)...).Scan(&idx, &done); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE key = ?`, key); err != nil {
		return false, err
	}
	if !done {
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM freed_addresses WHERE ip_index = ?`, idx); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO freed_addresses (ip_index, freed_at) VALUES (?, ?)`, idx, s.now().UnixMilli()); err != nil {
		return false, err
	}
	return true, nil
}

// deleteNode runs deleteNodeTx in a transaction of its own.
func (s *Store) deleteNode(ctx context.Context, step string, key []byte, cond string, args ...any) (bool, error) {
	var ok bool
	err := s.inTx(ctx, step, func(tx *txn) error {
		var err error
		ok, err = s.deleteNodeTx(ctx, tx, key, cond, args...)
		return err
	})
	return ok, err
}

// CompleteLogin records that the node's login completed: from now on it is a node that exists
// (its address is quarantined when it goes). Calling it again changes nothing and writes nothing.
func (s *Store) CompleteLogin(ctx context.Context, key []byte) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET login_done = 1 WHERE key = ? AND login_done = 0`, key); err != nil {
		return fmt.Errorf("complete login: %w", err)
	}
	return nil
}

// DeleteUnfinished deletes the node if no login of it ever completed (its first login was refused
// after registration), memberships included; its address is free at once. It reports whether it
// deleted the node.
func (s *Store) DeleteUnfinished(ctx context.Context, key []byte) (bool, error) {
	return s.deleteNode(ctx, "delete unfinished node", key, `n.login_done = 0`)
}

// DeleteStaleUnfinished deletes up to limit nodes registered before cutoff whose login never
// completed (a server that stopped mid-login, a delete that failed) and returns how many it deleted.
func (s *Store) DeleteStaleUnfinished(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	// Look first without the write lock: almost always there is nothing to do.
	var any bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM nodes WHERE login_done = 0 AND created_at < ?)`,
		cutoff.Unix()).Scan(&any); err != nil || !any {
		if err != nil {
			return 0, fmt.Errorf("delete stale unfinished nodes: %w", err)
		}
		return 0, nil
	}
	n := 0
	err := s.inTx(ctx, "delete stale unfinished nodes", func(tx *txn) error {
		keys, err := queryKeys(ctx, tx, `SELECT key FROM nodes WHERE login_done = 0 AND created_at < ? LIMIT ?`, cutoff.Unix(), limit)
		if err != nil {
			return err
		}
		for _, k := range keys {
			ok, err := s.deleteNodeTx(ctx, tx, k, `n.login_done = 0`)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		return nil
	})
	return n, err
}

// queryKeys runs a query that selects one key column.
func queryKeys(ctx context.Context, tx *txn, q string, args ...any) ([][]byte, error) {
	return keysOf(tx.QueryContext(ctx, q, args...))
}
