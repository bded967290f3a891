package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"
)

// Listings for the operator (warren-coord nodes, networks) and node removal.

// NodeInfo is a node with what an operator's listing shows besides the node itself.
type NodeInfo struct {
	Node
	Networks     []string  // sorted; never nil
	OfflineSince time.Time // when the server last saw it go offline; zero = unknown or online
}

// AllNodes lists every node with its networks, sorted by name (then key), in one query.
func (s *Store) AllNodes(ctx context.Context) ([]NodeInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+`, n.offline_since, m.network
		FROM nodes n LEFT JOIN members m ON m.key = n.key`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	byKey := make(map[string]int)
	out := []NodeInfo{}
	for rows.Next() {
		var offline sql.NullInt64
		var network sql.NullString
		n, err := s.scanNode(rows, &offline, &network)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		i, ok := byKey[string(n.Key)]
		if !ok {
			i = len(out)
			byKey[string(n.Key)] = i
			info := NodeInfo{Node: n, Networks: []string{}}
			if offline.Valid {
				info.OfflineSince = time.UnixMilli(offline.Int64).UTC()
			}
			out = append(out, info)
		}
		if network.Valid {
			out[i].Networks = append(out[i].Networks, network.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return nodeLess(out[i].Node, out[j].Node) })
	for i := range out {
		sort.Strings(out[i].Networks)
	}
	return out, nil
}

// NetworkInfo is a network with the keys of its members.
type NetworkInfo struct {
	Network
	Members [][]byte // member keys; never nil
}

// AllNetworks lists every network with its members' keys, sorted by name, in two queries.
func (s *Store) AllNetworks(ctx context.Context) ([]NetworkInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, password_hash, owner, created_at, approval, locked, is_open FROM networks`)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	defer rows.Close()
	out := []NetworkInfo{}
	byName := make(map[string]int)
	for rows.Next() {
		var n NetworkInfo
		var created int64
		if err := rows.Scan(&n.Name, &n.PasswordHash, &n.Owner, &created, &n.Approval, &n.Locked, &n.Open); err != nil {
			return nil, fmt.Errorf("list networks: %w", err)
		}
		n.CreatedAt = time.Unix(created, 0).UTC()
		n.Members = [][]byte{}
		byName[n.Name] = len(out)
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	rows.Close()
	mrows, err := s.db.QueryContext(ctx, `SELECT network, key FROM members`)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	defer mrows.Close()
	for mrows.Next() {
		var network string
		var key []byte
		if err := mrows.Scan(&network, &key); err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
		if i, ok := byName[network]; ok {
			out[i].Members = append(out[i].Members, key)
		}
	}
	if err := mrows.Err(); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteNode deletes a node, ephemeral or not, with its memberships; its host index becomes free
// for new nodes after the address quarantine. Networks it owns stay (with an owner that no longer exists). It reports whether
// the node existed. If the same key logs in later, it is a new node.
func (s *Store) DeleteNode(ctx context.Context, key []byte) (bool, error) {
	return s.deleteNode(ctx, "delete node", key, "")
}
