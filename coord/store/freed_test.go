package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a settable clock for the allocator.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time           { return c.t }
func (c *fakeClock) advance(d time.Duration)  { c.t = c.t.Add(d) }
func withClock(s *Store, c *fakeClock) *Store { s.clock = c.now; return s }

// completed registers a node and completes its login.
func completed(t *testing.T, s *Store, k []byte, name string) Node {
	t.Helper()
	n := upsert(t, s, k, name)
	if err := s.CompleteLogin(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAddressQuarantine(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := withClock(open(t, tempDB(t), testPools), clock)
	s.SetAddressQuarantine(7 * 24 * time.Hour)
	for i := 1; i <= 3; i++ {
		completed(t, s, key(byte(i)), fmt.Sprintf("n%d", i))
	}
	// Node 2 goes (deleted by the operator): its address is not handed out for 7 days.
	if ok, err := s.DeleteNode(ctx, key(2)); err != nil || !ok {
		t.Fatalf("DeleteNode: %v %v", ok, err)
	}
	clock.advance(time.Hour)
	if n := upsert(t, s, key(10), "a"); n.IPv4.String() != "100.64.0.4" {
		t.Errorf("new node an hour after a deletion got %v, want 100.64.0.4 (100.64.0.2 is in quarantine)", n.IPv4)
	}
	// An ephemeral node that logs out is quarantined too.
	if err := s.SetEphemeral(ctx, key(3)); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.DeleteEphemeral(ctx, key(3)); err != nil || !ok {
		t.Fatalf("DeleteEphemeral: %v %v", ok, err)
	}
	clock.advance(7*24*time.Hour - 2*time.Hour) // node 2's quarantine ends in an hour
	if n := upsert(t, s, key(11), "b"); n.IPv4.String() != "100.64.0.5" {
		t.Errorf("new node before the quarantine ended got %v, want 100.64.0.5", n.IPv4)
	}
	clock.advance(time.Hour) // exactly 7 days after node 2 went
	if n := upsert(t, s, key(12), "c"); n.IPv4.String() != "100.64.0.2" {
		t.Errorf("new node once node 2's quarantine ended got %v, want its 100.64.0.2", n.IPv4)
	}
	// Node 3's address is still in quarantine; the next one is past the end.
	if n := upsert(t, s, key(13), "d"); n.IPv4.String() != "100.64.0.6" {
		t.Errorf("next new node got %v, want 100.64.0.6", n.IPv4)
	}
	// A node freed again later starts a new quarantine (the old record is replaced).
	completed(t, s, key(12), "c")
	if ok, err := s.DeleteNode(ctx, key(12)); err != nil || !ok {
		t.Fatal(ok, err)
	}
	clock.advance(2 * time.Hour) // node 3's quarantine is over, node 12's (100.64.0.2) is not
	if n := upsert(t, s, key(14), "e"); n.IPv4.String() != "100.64.0.3" {
		t.Errorf("got %v, want node 3's 100.64.0.3", n.IPv4)
	}
	if n := upsert(t, s, key(15), "f"); n.IPv4.String() != "100.64.0.7" {
		t.Errorf("got %v, want 100.64.0.7 (100.64.0.2 freed again two hours ago)", n.IPv4)
	}

	// Quarantine 0: a freed address is handed out at once.
	s.SetAddressQuarantine(0)
	if n := upsert(t, s, key(16), "g"); n.IPv4.String() != "100.64.0.2" {
		t.Errorf("without quarantine got %v, want 100.64.0.2", n.IPv4)
	}
}

func TestQuarantineExhaustsSmallPool(t *testing.T) {
	// A /30 holds one node (10.0.0.2, before the broadcast address, is the node's DNS server);
	// with that address in quarantine a new node does not fit.
	ctx := context.Background()
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s := withClock(open(t, tempDB(t), tinyPools("10.0.0.0/30")), clock)
	s.SetAddressQuarantine(time.Hour)
	completed(t, s, key(1), "a")
	if _, err := s.DeleteNode(ctx, key(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertNode(ctx, key(3), "c"); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("new node with the only free address in quarantine: %v, want ErrPoolExhausted", err)
	}
	clock.advance(time.Hour)
	if n := upsert(t, s, key(3), "c"); n.IPv4.String() != "10.0.0.1" {
		t.Errorf("after the quarantine: %v", n.IPv4)
	}
}

func TestUnfinishedNodes(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Unix(2e9, 0)}
	s := withClock(open(t, tempDB(t), testPools), clock)
	s.SetAddressQuarantine(24 * time.Hour)

	n := upsert(t, s, key(1), "new")
	if n.LoginDone {
		t.Fatal("a new node's login is done before CompleteLogin")
	}
	// Refused after registration: deleted, and its address is free at once (never anyone's peer).
	if ok, err := s.DeleteUnfinished(ctx, key(1)); err != nil || !ok {
		t.Fatalf("DeleteUnfinished: %v %v", ok, err)
	}
	if _, err := s.Node(ctx, key(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("node after DeleteUnfinished: %v", err)
	}
	if n := upsert(t, s, key(2), "next"); n.IPv4 != netipAddr("100.64.0.1") {
		t.Errorf("next node got %v, want the unfinished node's 100.64.0.1", n.IPv4)
	}
	// A completed node is not deleted by it.
	if err := s.CompleteLogin(ctx, key(2)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Node(ctx, key(2)); err != nil || !n.LoginDone {
		t.Fatalf("after CompleteLogin: %+v %v", n, err)
	}
	if ok, err := s.DeleteUnfinished(ctx, key(2)); err != nil || ok {
		t.Errorf("DeleteUnfinished on a completed node: %v %v", ok, err)
	}

	// The reaper takes unfinished nodes registered before the cutoff only.
	upsert(t, s, key(3), "old")
	clock.advance(11 * time.Minute)
	upsert(t, s, key(4), "young")
	if n, err := s.DeleteStaleUnfinished(ctx, clock.now().Add(-10*time.Minute), 100); err != nil || n != 1 {
		t.Fatalf("DeleteStaleUnfinished = %d, %v; want 1", n, err)
	}
	for k, want := range map[byte]bool{2: true, 3: false, 4: true} {
		_, err := s.Node(ctx, key(k))
		if got := err == nil; got != want {
			t.Errorf("node %d exists = %v, want %v (%v)", k, got, want, err)
		}
	}
	if n, err := s.DeleteStaleUnfinished(ctx, clock.now().Add(-10*time.Minute), 100); err != nil || n != 0 {
		t.Errorf("second pass = %d, %v; want 0", n, err)
	}
}

func TestStorageFull(t *testing.T) {
	if StorageFull(nil) || StorageFull(errors.New("internal")) || StorageFull(ErrNotFound) {
		t.Error("ordinary errors count as storage full")
	}
	if !StorageFull(fmt.Errorf("commit: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})) {
		t.Error("ENOSPC does not count as storage full")
	}
	if !StorageFull(codedErr(13)) || !StorageFull(codedErr(13|3<<8)) || StorageFull(codedErr(10)) {
		t.Error("SQLite result codes misread")
	}
}

type codedErr int

func (e codedErr) Error() string { return fmt.Sprintf("sqlite code %d", int(e)) }
func (e codedErr) Code() int     { return int(e) }

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestRegisterLogin: a login without an admission decision registers, marks ephemeral and
// completes in one write; RegisterLogin never unmarks an ephemeral node nor uncompletes a login.
func TestRegisterLogin(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	n, err := s.RegisterLogin(ctx, key(1), "job", LoginOptions{Ephemeral: true, Complete: true})
	if err != nil {
		t.Fatal(err)
	}
	if !n.Ephemeral || !n.LoginDone || n.IPv4 != netipAddr("100.64.0.1") {
		t.Fatalf("new node: %+v, want ephemeral, login done, 100.64.0.1", n)
	}
	if n, err = s.RegisterLogin(ctx, key(1), "job", LoginOptions{}); err != nil || !n.Ephemeral || !n.LoginDone {
		t.Fatalf("known node, no options: %+v %v; want still ephemeral and done", n, err)
	}
	upsert(t, s, key(2), "laptop")
	if n, err = s.RegisterLogin(ctx, key(2), "laptop", LoginOptions{Complete: true}); err != nil || n.Ephemeral || !n.LoginDone {
		t.Fatalf("unfinished node completed: %+v %v; want not ephemeral, done", n, err)
	}
	if n, err = s.RegisterLogin(ctx, key(2), "laptop", LoginOptions{Ephemeral: true}); err != nil || !n.Ephemeral {
		t.Fatalf("known node asking to be ephemeral: %+v %v", n, err)
	}
	// The allocator's fast path (no gap) and its search (a gap) agree with the lowest free index.
	upsert(t, s, key(3), "c")
	upsert(t, s, key(4), "d")
	if ok, err := s.DeleteUnfinished(ctx, key(3)); err != nil || !ok {
		t.Fatalf("DeleteUnfinished: %v %v", ok, err)
	}
	for i, want := range []string{"100.64.0.3", "100.64.0.5"} {
		k := byte(5 + i)
		if n := upsert(t, s, key(k), fmt.Sprintf("n%d", k)); n.IPv4 != netipAddr(want) {
			t.Errorf("node %d got %v, want %v", k, n.IPv4, want)
		}
	}
}

// TestAllocatorFloorMatchesModel drives the allocator through a random mix of registrations,
// deletions (before and after a completed login) and clock steps across the quarantine, and checks
// every new node's index against a plain model: the lowest index that no node has and that no live
// quarantine record holds. The floor (address_floor) must never make it skip one or reuse one.
func TestAllocatorFloorMatchesModel(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := withClock(open(t, tempDB(t), testPools), clock)
	const quarantine = time.Hour
	s.SetAddressQuarantine(quarantine)
	rng := rand.New(rand.NewPCG(1, 23))
	base := testPools.V4.Addr().As4()
	index := func(n Node) int64 {
		a := n.IPv4.As4()
		return int64(binary.BigEndian.Uint32(a[:]) - binary.BigEndian.Uint32(base[:]))
	}
	type live struct {
		key  []byte
		done bool
	}
	used := map[int64]live{}         // index -> node
	freedAt := map[int64]time.Time{} // index -> quarantined since
	var next uint64
	steps := 400
	if pgServer != nil {
		steps = 150 // a round trip per statement: keep the PostgreSQL run short
	}
	for step := range steps {
		switch op := rng.IntN(10); {
		case op < 5 || len(used) == 0: // a new node
			next++
			k := make([]byte, 32)
			binary.BigEndian.PutUint64(k, next)
			want := int64(1)
			for {
				_, taken := used[want]
				if at, ok := freedAt[want]; ok && clock.t.Sub(at) < quarantine {
					taken = true
				}
				if !taken {
					break
				}
				want++
			}
			n := upsert(t, s, k, "n")
			if got := index(n); got != want {
				t.Fatalf("step %d: new node got index %d, want %d (used %d, quarantined %d)", step, got, want, len(used), len(freedAt))
			}
			done := rng.IntN(3) > 0
			if done {
				if err := s.CompleteLogin(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			used[want] = live{k, done}
		case op < 8: // a node goes: quarantined if its login completed, free at once if not
			idx := slices.Sorted(maps.Keys(used))[rng.IntN(len(used))]
			n := used[idx]
			var ok bool
			var err error
			if n.done {
				ok, err = s.DeleteNode(ctx, n.key)
				freedAt[idx] = clock.t
			} else {
				ok, err = s.DeleteUnfinished(ctx, n.key)
			}
			if err != nil || !ok {
				t.Fatalf("step %d: delete index %d: %v %v", step, idx, ok, err)
			}
			delete(used, idx)
		default: // time passes; some quarantines end
			clock.advance(time.Duration(rng.IntN(40)) * time.Minute)
		}
	}
}
