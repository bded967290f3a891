package store

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestDeleteExpiredEphemeral: one call deletes exactly the given ephemeral nodes offline since
// before the cutoff, and reports each with the peers it had.
func TestDeleteExpiredEphemeral(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	t0 := time.Now()
	// lan: 1 (owner), 2, 3, 4; wan: 5 (owner), 3, 6.
	if err := errors.Join(s.CreateNetwork(ctx, "lan", "", key(1)), s.CreateNetwork(ctx, "wan", "", key(5)),
		s.AddMember(ctx, "lan", key(2)), s.AddMember(ctx, "lan", key(3)), s.AddMember(ctx, "lan", key(4)),
		s.AddMember(ctx, "wan", key(3)), s.AddMember(ctx, "wan", key(6))); err != nil {
		t.Fatal(err)
	}
	for _, k := range []byte{2, 3, 4, 6} {
		if err := s.SetEphemeral(ctx, key(k)); err != nil {
			t.Fatal(err)
		}
	}
	for k, at := range map[byte]time.Time{
		1: t0.Add(-10 * time.Second), // permanent: stays
		2: t0.Add(-10 * time.Second), // expired
		3: t0.Add(-5 * time.Second),  // expired
		4: t0.Add(time.Second),       // offline, but not long enough
		6: t0.Add(-10 * time.Second), // expired, but comes back below
	} {
		if err := s.MarkOffline(ctx, key(k), at); err != nil {
			t.Fatal(err)
		}
	}
	upsert(t, s, key(6), nodeNames[5]) // logged in again: online

	if got, err := s.DeleteExpiredEphemeral(ctx, nil, t0); err != nil || len(got) != 0 {
		t.Errorf("no keys: %v %v", got, err)
	}
	got, err := s.DeleteExpiredEphemeral(ctx, [][]byte{key(2), key(42), key(1), key(3), key(4), key(6)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		node  byte
		peers []byte
	}{
		{2, []byte{1, 3, 4}},
		{3, []byte{1, 4, 5, 6}}, // 2 is gone by then
	}
	if len(got) != len(want) {
		t.Fatalf("deleted %d nodes, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		var peers []byte
		for _, p := range got[i].Peers {
			peers = append(peers, p[0])
		}
		slices.Sort(peers)
		if !bytes.Equal(got[i].Key, key(w.node)) || !bytes.Equal(peers, w.peers) {
			t.Errorf("deleted #%d: node %d with peers %v, want node %d with %v", i, got[i].Key[0], peers, w.node, w.peers)
		}
	}
	for k, stays := range map[byte]bool{1: true, 2: false, 3: false, 4: true, 5: true, 6: true} {
		if _, err := s.Node(ctx, key(k)); (err == nil) != stays {
			t.Errorf("node %d: %v, want stays=%v", k, err, stays)
		}
	}
	for network, want := range map[string][]string{"lan": {"delta", "bravo"}, "wan": {"charlie", "foxtrot"}} {
		m, err := s.Members(ctx, network)
		var names []string
		for _, n := range m {
			names = append(names, n.Name)
		}
		if err != nil || !sameSet(names, want) {
			t.Errorf("%s members: %v %v, want %v", network, names, err, want)
		}
	}
	// The freed addresses are handed out again.
	if n := upsert(t, s, key(50), "new"); n.IPv4 != s.pools.V4.Addr().Next().Next() {
		t.Errorf("new node got %v, want node 2's freed address", n.IPv4)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestDeleteAbandoned: only nodes in no network, waiting nowhere, banned nowhere and owning
// nothing, offline since before the cutoff, are forgotten.
func TestDeleteAbandoned(t *testing.T) {
	s := newNetStore(t) // nodes 1-6
	ctx := context.Background()
	t0 := time.Now()
	// 1 owns lan, 2 is a member, 3 is banned from it, 4 waits for approval; 5 and 6 are in nothing.
	if err := errors.Join(s.CreateNetwork(ctx, "lan", "", key(1)), s.AddMember(ctx, "lan", key(2)),
		s.Ban(ctx, "lan", key(3)), s.AddPending(ctx, "lan", key(4))); err != nil {
		t.Fatal(err)
	}
	for k := byte(1); k <= 5; k++ {
		if err := s.MarkOffline(ctx, key(k), t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkOffline(ctx, key(6), t0.Add(time.Second)); err != nil { // not long enough
		t.Fatal(err)
	}
	n, err := s.DeleteAbandoned(ctx, t0, 100)
	if err != nil || n != 1 {
		t.Fatalf("deleted %d, %v; want 1 (node 5)", n, err)
	}
	for k := byte(1); k <= 6; k++ {
		_, err := s.Node(ctx, key(k))
		if gone := errors.Is(err, ErrNotFound); gone != (k == 5) {
			t.Errorf("node %d: gone %v", k, gone)
		}
	}
}
