package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Ephemeral nodes (CI jobs, containers) are deleted, memberships and address included, once they
// have been offline for a while. The store keeps since when each node is offline (UpsertNode clears
// it, MarkOffline sets it, in milliseconds), so a server that restarts keeps reaping where it left
// off.

// SetEphemeral marks a node ephemeral. Nothing makes it permanent again. It returns an error
// wrapping ErrNotFound for an unknown node.
func (s *Store) SetEphemeral(ctx context.Context, node []byte) error {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET ephemeral = 1 WHERE key = ?`, node)
	if err != nil {
		return fmt.Errorf("mark node ephemeral: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("mark node ephemeral: %w", err)
	} else if n == 0 {
		return fmt.Errorf("mark node ephemeral: %w", ErrNotFound)
	}
	return nil
}

// MarkOffline records that the node went offline at at, unless it is recorded offline already
// (the earlier time stays). An unknown node is no error.
func (s *Store) MarkOffline(ctx context.Context, node []byte, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET offline_since = ? WHERE key = ? AND offline_since IS NULL`,
		at.UnixMilli(), node); err != nil {
		return fmt.Errorf("mark node offline: %w", err)
	}
	return nil
}

// RestartOfflineClocks is for a server starting up, when no node is online: every ephemeral node
// recorded online (the server stopped without seeing it leave) counts as offline since now, and
// one offline since before floor counts as offline since floor, so that every node gets a grace
// period to reconnect. It returns how many ephemeral nodes there are.
func (s *Store) RestartOfflineClocks(ctx context.Context, now, floor time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET offline_since = CASE
			WHEN offline_since IS NULL THEN ?
			WHEN offline_since < ? THEN ?
			ELSE offline_since END
		WHERE ephemeral = 1`, now.UnixMilli(), floor.UnixMilli(), floor.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("restart offline clocks: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("restart offline clocks: %w", err)
	}
	return n, nil
}

// ExpiredEphemeral lists up to limit ephemeral nodes that have been offline since before cutoff,
// longest offline first.
func (s *Store) ExpiredEphemeral(ctx context.Context, cutoff time.Time, limit int) ([]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes n
		WHERE n.ephemeral = 1 AND n.offline_since IS NOT NULL AND n.offline_since < ?
		ORDER BY n.offline_since LIMIT ?`, cutoff.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("list expired ephemeral nodes: %w", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := s.scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list expired ephemeral nodes: %w", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list expired ephemeral nodes: %w", err)
	}
	return out, nil
}

// DeleteEphemeral deletes an ephemeral node with its memberships (a node logging out); its host
// index becomes free for new nodes. It reports whether the node was deleted. The reaper's deletions,
// conditional on the offline time, are DeleteExpiredEphemeral's.
func (s *Store) DeleteEphemeral(ctx context.Context, node []byte) (bool, error) {
	return s.deleteNode(ctx, "delete ephemeral node", node, `n.ephemeral = 1`)
}

// ReapedNode is a node DeleteExpiredEphemeral deleted.
type ReapedNode struct {
	Key   []byte
	Peers [][]byte // keys of the nodes it shared a network with until then
}

// DeleteExpiredEphemeral deletes, in one transaction, each of the given nodes that is ephemeral
// and recorded offline since before cutoff (a node that logged in meanwhile stays, and so does an
// unknown one), with its memberships; their host indexes become free for new nodes. It returns the
// deleted nodes in the order given, each with its peers as they were just before it went (a node
// deleted earlier in the batch is not among the later ones' peers). The transaction holds the write
// lock throughout, so callers pass a bounded batch.
func (s *Store) DeleteExpiredEphemeral(ctx context.Context, keys [][]byte, cutoff time.Time) ([]ReapedNode, error) {
	var out []ReapedNode
	err := s.inTx(ctx, "delete expired ephemeral nodes", func(tx *txn) error {
		peers, err := tx.PrepareContext(ctx, `SELECT DISTINCT theirs.key FROM members mine
			JOIN members theirs ON theirs.network = mine.network AND theirs.key <> mine.key
			WHERE mine.key = ?`)
		if err != nil {
			return err
		}
		defer peers.Close()
		for _, k := range keys {
			ps, err := peerKeys(ctx, peers, k)
			if err != nil {
				return err
			}
			ok, err := s.deleteNodeTx(ctx, tx, k, `n.ephemeral = 1 AND n.offline_since IS NOT NULL AND n.offline_since < ?`, cutoff.UnixMilli())
			if err != nil {
				return err
			}
			if ok {
				out = append(out, ReapedNode{Key: k, Peers: ps})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// peerKeys runs the prepared query q, which selects keys, for key.
func peerKeys(ctx context.Context, q *sql.Stmt, key []byte) ([][]byte, error) {
	return keysOf(q.QueryContext(ctx, key))
}

// keysOf reads the rows of a query that selects one BLOB column (keys) and closes them.
func keysOf(rows *sql.Rows, err error) ([][]byte, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteAbandoned deletes up to limit nodes that have been offline since before cutoff and are in no
// network, wait for no approval, own no network and are banned nowhere (a ban must outlive the
// node's absence), and returns how many it deleted. Such nodes have no peers to tell; their
// overlay addresses become free.
func (s *Store) DeleteAbandoned(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	var n int64
	err := s.inTx(ctx, "delete abandoned nodes", func(tx *txn) error {
		keys, err := queryKeys(ctx, tx, `SELECT n.key FROM nodes n
			WHERE n.offline_since IS NOT NULL AND n.offline_since < ?
			AND NOT EXISTS (SELECT 1 FROM members m WHERE m.key = n.key)
			AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.key = n.key)
			AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.key = n.key)
			AND NOT EXISTS (SELECT 1 FROM networks w WHERE w.owner = n.key)
			LIMIT ?`, cutoff.UnixMilli(), limit)
		if err != nil {
			return err
		}
		for _, k := range keys {
			ok, err := s.deleteNodeTx(ctx, tx, k, "")
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
