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

// The allocator hands out the lowest host index that no node has and that is not in quarantine.
// Searching from 1 costs a probe per node, and counting the nodes to skip the search when there is
// no gap costs a pass over them: on PostgreSQL at 10,000 nodes that count took 1–5 ms of each
// registration, under the writer lock, which capped first logins at about 110/s. So the store
// keeps a floor, one row in address_floor: no index below it is free. A registration searches up
// from the floor only, which in the usual case (no gap) is one probe, and raises the floor to the
// next free index after it. Whatever frees an index lowers the floor to it: deleting a node whose
// login never completed, and a quarantine record's expiry. A floor that is too low costs a longer
// search; one too high could skip a free index, never hand out a taken one (ip_index is unique).

// lowestFreeSQL is the lowest host index at or above the floor that no node has and that is not
// in quarantine. Usually that is the floor itself (before a registration) or the one after it
// (raising the floor after one): two probes of unique indexes (nodes.ip_index, freed_addresses'
// primary key). Otherwise it searches: the candidates are the floor and one past every index in
// use or in quarantine at or above it, since the lowest free index f is the floor or f-1 is taken.
// The search may read every node (PostgreSQL plans a range of a third of the table as a scan), but
// it runs only when the floor sits below a run of taken indexes, and leaves the floor past it.
var lowestFreeSQL = `(SELECT CASE
		WHEN ` + freeSQL("f.below") + ` THEN f.below
		WHEN ` + freeSQL("f.below + 1") + ` THEN f.below + 1
		ELSE (SELECT MIN(c.i) FROM (
				SELECT f.below AS i
				UNION ALL SELECT ip_index + 1 FROM nodes WHERE ip_index >= f.below
				UNION ALL SELECT ip_index + 1 FROM freed_addresses WHERE ip_index >= f.below
			) c
			WHERE ` + freeSQL("c.i") + `)
		END FROM address_floor f)`

// freeSQL is true when host index i (an SQL expression) is neither a node's nor in quarantine. The
// probes are scalar subqueries rather than NOT EXISTS, which PostgreSQL may turn into an anti-join
// that hashes every node.
func freeSQL(i string) string {
	return `(SELECT 1 FROM nodes n WHERE n.ip_index = ` + i + `) IS NULL AND (SELECT 1 FROM freed_addresses q WHERE q.ip_index = ` + i + `) IS NULL`
}

// allocStatements are the statements of a new node's registration, for a pipeline that holds the
// writer lock (see RegisterLogin): forget quarantine records older than cutoff (unix ms), lowering
// the floor to the lowest of them; insert the node (key, name, now, fingerprint, ephemeral,
// login_done) at the lowest free index unless a node with its key exists by now or that index
// exceeds maxIndex; raise the floor past what is taken.
func allocStatements(cutoff int64, key []byte, name string, now int64, fp string, ephemeral, done bool, maxIndex int64) []stmt {
	return []stmt{
		{`UPDATE address_floor SET below = (SELECT MIN(ip_index) FROM freed_addresses WHERE freed_at <= ?)
			WHERE below > (SELECT MIN(ip_index) FROM freed_addresses WHERE freed_at <= ?)`, []any{cutoff, cutoff}},
		{`DELETE FROM freed_addresses WHERE freed_at <= ?`, []any{cutoff}},
		{`INSERT INTO nodes (key, name, created_at, last_seen, fingerprint, ephemeral, login_done, ip_index)
			SELECT ?, ?, ?, ?, ?, ?, ?, a.i FROM (SELECT ` + lowestFreeSQL + ` AS i) a
			WHERE a.i <= ? AND NOT EXISTS (SELECT 1 FROM nodes WHERE key = ?)`,
			[]any{key, name, now, now, fp, ephemeral, done, maxIndex, key}},
		{`UPDATE address_floor SET below = ` + lowestFreeSQL, nil},
	}
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
		// Free at once: the floor comes down to it.
		if _, err := tx.ExecContext(ctx, `UPDATE address_floor SET below = ? WHERE below > ?`, idx, idx); err != nil {
			return false, err
		}
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
