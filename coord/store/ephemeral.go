package store

import (
	"context"
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

// DeleteEphemeral deletes an ephemeral node with its memberships; its host index becomes free for
// new nodes. With a non-zero offlineBefore, only a node offline since before then is deleted (a node
// that came back in the meantime stays). It reports whether the node was deleted.
func (s *Store) DeleteEphemeral(ctx context.Context, node []byte, offlineBefore time.Time) (bool, error) {
	q, args := `DELETE FROM nodes WHERE key = ? AND ephemeral = 1`, []any{node}
	if !offlineBefore.IsZero() {
		q += ` AND offline_since IS NOT NULL AND offline_since < ?`
		args = append(args, offlineBefore.UnixMilli())
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("delete ephemeral node: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("delete ephemeral node: %w", err)
	}
	return n > 0, nil
}
