package store

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var testPools = Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func open(t *testing.T, path string, pools Pools) *Store {
	t.Helper()
	s, err := Open(path, pools)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStableAddressesAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	s := open(t, path, testPools)
	a, err := s.UpsertNode(ctx, key(1), "a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.UpsertNode(ctx, key(2), "b")
	if a.IPv4 != netip.MustParseAddr("100.64.0.1") || a.IPv6 != netip.MustParseAddr("fd7a:7761:7272::1") {
		t.Errorf("first node got %v %v", a.IPv4, a.IPv6)
	}
	if a.IPv4 == b.IPv4 || a.IPv6 == b.IPv6 {
		t.Errorf("distinct keys share addresses: %v %v", a, b)
	}
	s.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode: %v %v", fi.Mode(), err)
	}
	s = open(t, path, testPools)
	a2, err := s.UpsertNode(ctx, key(1), "renamed")
	if err != nil {
		t.Fatal(err)
	}
	if a2.IPv4 != a.IPv4 || a2.IPv6 != a.IPv6 || a2.Name != "renamed" {
		t.Errorf("after reopen: %+v, before %+v", a2, a)
	}
}

func TestPoolExhaustionAndReuse(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "w.db"), Pools{V4: netip.MustParsePrefix("10.9.0.0/30"), V6: testPools.V6})
	n1, err := s.UpsertNode(ctx, key(1), "a")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := s.UpsertNode(ctx, key(2), "b")
	if err != nil {
		t.Fatal(err)
	}
	if n1.IPv4.String() != "10.9.0.1" || n2.IPv4.String() != "10.9.0.2" {
		t.Errorf("got %v %v", n1.IPv4, n2.IPv4)
	}
	if _, err := s.UpsertNode(ctx, key(3), "c"); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("third node in a /30: %v", err)
	}
	if _, err := s.UpsertNode(ctx, key(4), "Bad_Name"); err == nil {
		t.Error("invalid node name accepted")
	}
}

func TestNetworksAndPeers(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "w.db"), testPools)
	for i, n := range []string{"a", "b", "c", "d"} {
		if _, err := s.UpsertNode(ctx, key(byte(i+1)), n); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.CreateNetwork(ctx, "lan", "", key(1)))
	if err := s.CreateNetwork(ctx, "lan", "", key(2)); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate network: %v", err)
	}
	must(s.CreateNetwork(ctx, "games", "", key(1)))
	must(s.AddMember(ctx, "lan", key(2)))
	must(s.AddMember(ctx, "lan", key(2))) // idempotent
	must(s.AddMember(ctx, "games", key(2)))
	must(s.CreateNetwork(ctx, "other", "", key(3)))
	if err := s.AddMember(ctx, "nope", key(4)); !errors.Is(err, ErrNotFound) {
		t.Errorf("join missing network: %v", err)
	}
	if _, err := s.Network(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing network: %v", err)
	}

	peers, err := s.Peers(ctx, key(1))
	must(err)
	if len(peers) != 1 || peers[0].Name != "b" || len(peers[0].Networks) != 2 || peers[0].Networks[0] != "games" {
		t.Fatalf("peers of a: %+v", peers)
	}
	if p, _ := s.Peers(ctx, key(3)); len(p) != 0 {
		t.Errorf("c shares no network but has peers %+v", p)
	}
	nets, _ := s.NetworksOf(ctx, key(2))
	if len(nets) != 2 {
		t.Errorf("networks of b: %v", nets)
	}
	mem, _ := s.Members(ctx, "lan")
	if len(mem) != 2 || mem[0].Name != "a" {
		t.Errorf("members of lan: %+v", mem)
	}
	must(s.RemoveMember(ctx, "games", key(2)))
	if err := s.RemoveMember(ctx, "games", key(2)); !errors.Is(err, ErrNotMember) {
		t.Errorf("double leave: %v", err)
	}
	peers, _ = s.Peers(ctx, key(1))
	if len(peers) != 1 || len(peers[0].Networks) != 1 {
		t.Errorf("after leave: %+v", peers)
	}
	if err := s.CreateNetwork(ctx, "Bad Name", "", key(1)); err == nil {
		t.Error("invalid network name accepted")
	}
}

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := VerifyPassword(h, "correct horse"); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, _ := VerifyPassword(h, "wrong"); ok {
		t.Error("wrong password accepted")
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Error("no salt")
	}
	for _, bad := range []string{"", "$argon2id$", "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=8,t=1,p=1$!!$aGFzaA"} {
		if _, err := VerifyPassword(bad, "x"); err == nil {
			t.Errorf("malformed %q accepted", bad)
		}
	}
}

func FuzzVerifyPassword(f *testing.F) {
	h, _ := HashPassword("pw")
	f.Add(h, "pw")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x")
	f.Fuzz(func(t *testing.T, encoded, pw string) {
		VerifyPassword(encoded, pw) // must not panic, and bounds keep it fast
	})
}
