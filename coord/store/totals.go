package store

import (
	"context"
	"fmt"
)

// Totals returns how many nodes and networks the store holds (for metrics).
func (s *Store) Totals(ctx context.Context) (nodes, networks int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM networks)`).Scan(&nodes, &networks)
	if err != nil {
		return 0, 0, fmt.Errorf("count nodes and networks: %w", err)
	}
	return nodes, networks, nil
}
