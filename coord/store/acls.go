package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetACL stores a network's rule list (opaque text: the coord's JSON), replacing any earlier one. It
// returns an error wrapping ErrNotFound if the network does not exist.
func (s *Store) SetACL(ctx context.Context, network, rules string) error {
	res, err := s.db.ExecContext(ctx, `INSERT INTO acls (network, rules, updated_at)
		SELECT name, ?, ? FROM networks WHERE name = ?
		ON CONFLICT (network) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at`,
		rules, time.Now().Unix(), network)
	if err != nil {
		return fmt.Errorf("set rules of %q: %w", network, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set rules of %q: %w", network, err)
	} else if n == 0 {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	return nil
}

// ClearACL removes a network's rule list; clearing a network without one changes nothing.
func (s *Store) ClearACL(ctx context.Context, network string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM acls WHERE network = ?`, network); err != nil {
		return fmt.Errorf("clear rules of %q: %w", network, err)
	}
	return nil
}

// ACL returns a network's rule list as stored, "" if it has none.
func (s *Store) ACL(ctx context.Context, network string) (string, error) {
	var rules string
	err := s.db.QueryRowContext(ctx, `SELECT rules FROM acls WHERE network = ?`, network).Scan(&rules)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("rules of %q: %w", network, err)
	}
	return rules, nil
}

// ACLsOf returns the rule lists of the networks the node is in that have one, by network name.
func (s *Store) ACLsOf(ctx context.Context, key []byte) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT a.network, a.rules FROM acls a
		JOIN members m ON m.network = a.network WHERE m.key = ?`, key)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var network, rules string
		if err := rows.Scan(&network, &rules); err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		out[network] = rules
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}
