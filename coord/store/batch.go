package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Batched reads for a coord that applies many other coords' events at once (cluster.go): one query
// for a batch of nodes instead of one per node and event.

// MaxBatchKeys bounds the keys of one batched read.
const MaxBatchKeys = 1024

// inList returns "?, ?, …" for n placeholders.
func inList(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func keyArgs(keys [][]byte) []any {
	a := make([]any, len(keys))
	for i, k := range keys {
		a[i] = k
	}
	return a
}

// PresencesOf returns the presence rows of the given nodes (at most MaxBatchKeys), by key; a node
// logged in nowhere has none.
func (s *Store) PresencesOf(ctx context.Context, keys [][]byte) (map[string]Presence, error) {
	if len(keys) > MaxBatchKeys {
		return nil, fmt.Errorf("presence of %d nodes: at most %d at once", len(keys), MaxBatchKeys)
	}
	out := make(map[string]Presence, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT key, coord, since, heartbeat, endpoints FROM presence WHERE key IN (`+inList(len(keys))+`)`, keyArgs(keys)...)
	if err != nil {
		return nil, fmt.Errorf("presence of %d nodes: %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		p, err := scanPresence(rows)
		if err != nil {
			return nil, fmt.Errorf("presence of %d nodes: %w", len(keys), err)
		}
		out[string(p.Key)] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("presence of %d nodes: %w", len(keys), err)
	}
	return out, nil
}

// NodesWithPeers returns, for the given nodes (at most MaxBatchKeys), each existing node and its
// peers as Peers returns them, by key. A deleted node is missing from both maps.
func (s *Store) NodesWithPeers(ctx context.Context, keys [][]byte) (map[string]Node, map[string][]PeerRow, error) {
	if len(keys) > MaxBatchKeys {
		return nil, nil, fmt.Errorf("read %d nodes: at most %d at once", len(keys), MaxBatchKeys)
	}
	nodes := make(map[string]Node, len(keys))
	peers := make(map[string][]PeerRow, len(keys))
	if len(keys) == 0 {
		return nodes, peers, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes n WHERE n.key IN (`+inList(len(keys))+`)`, keyArgs(keys)...)
	if err != nil {
		return nil, nil, fmt.Errorf("read %d nodes: %w", len(keys), err)
	}
	for rows.Next() {
		n, err := s.scanNode(rows)
		if err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read %d nodes: %w", len(keys), err)
		}
		nodes[string(n.Key)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %d nodes: %w", len(keys), err)
	}
	rows, err = s.db.QueryContext(ctx, `SELECT mine.key, `+nodeColumns+`, theirs.network
		FROM members mine
		JOIN members theirs ON theirs.network = mine.network AND theirs.key <> mine.key
		JOIN nodes n ON n.key = theirs.key
		WHERE mine.key IN (`+inList(len(keys))+`)`, keyArgs(keys)...)
	if err != nil {
		return nil, nil, fmt.Errorf("list peers of %d nodes: %w", len(keys), err)
	}
	defer rows.Close()
	index := make(map[[2]string]int) // (node, peer) -> index in peers[node]
	for rows.Next() {
		var mine []byte
		var network string
		var n Node
		n, err = s.scanNode(rowWithFirst{rows, &mine}, &network)
		if err != nil {
			return nil, nil, fmt.Errorf("list peers of %d nodes: %w", len(keys), err)
		}
		ik := [2]string{string(mine), string(n.Key)}
		if i, ok := index[ik]; ok {
			peers[ik[0]][i].Networks = append(peers[ik[0]][i].Networks, network)
			continue
		}
		index[ik] = len(peers[ik[0]])
		peers[ik[0]] = append(peers[ik[0]], PeerRow{Node: n, Networks: []string{network}})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list peers of %d nodes: %w", len(keys), err)
	}
	for k, out := range peers {
		if _, ok := nodes[k]; !ok {
			delete(peers, k) // deleted between the two reads: as good as gone
			continue
		}
		sort.Slice(out, func(i, j int) bool { return nodeLess(out[i].Node, out[j].Node) })
		for i := range out {
			sort.Strings(out[i].Networks)
		}
	}
	return nodes, peers, nil
}

// rowWithFirst is a scanner that reads one leading column into first before what scanNode reads.
type rowWithFirst struct {
	r     scanner
	first any
}

func (r rowWithFirst) Scan(dest ...any) error { return r.r.Scan(append([]any{r.first}, dest...)...) }
