package node

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

// TestDuplicateNameResolvesToNeither: repro (b) — mallory claims bob's name. Whatever order the
// peers come in, bob.warren resolves to neither of them, and a rule naming bob grants neither.
func TestDuplicateNameResolvesToNeither(t *testing.T) {
	bob, mallory, alice := peer.Key{1}, peer.Key{2}, peer.Key{3}
	peers := map[peer.Key]control.Peer{
		bob:     {Key: bob[:], Name: "bob", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}},
		mallory: {Key: mallory[:], Name: "BOB", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}},
		alice:   {Key: alice[:], Name: "alice", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}},
	}
	for range 20 { // map order varies; the answer does not
		byName, ambiguous := nameIndex(peers, "me")
		if _, ok := byName["bob"]; ok || !slices.Equal(ambiguous, []string{"bob"}) || byName["alice"] != netip.MustParseAddr("100.64.0.4") {
			t.Fatalf("nameIndex: %v, ambiguous %v", byName, ambiguous)
		}
	}
	// A peer that claims this node's own name does not get it either.
	if byName, ambiguous := nameIndex(peers, "alice"); byName["alice"].IsValid() || !slices.Contains(ambiguous, "alice") {
		t.Errorf("a peer took this node's name: %v %v", byName, ambiguous)
	}

	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "me", Expose: []Port{{"tcp", 48082}}})
	if err != nil {
		t.Fatal(err)
	}
	n.welcome = &control.Welcome{IPv4: netip.MustParseAddr("100.64.0.1")}
	var list []control.Peer
	for _, p := range peers {
		p.Name = strings.ToLower(p.Name) // as the coord would send it
		p.Networks = []string{"lan"}
		list = append(list, p)
	}
	n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{Peers: list,
		ACLs: []control.ACL{{Network: "lan", Rules: []control.ACLRule{{From: []string{"bob"}, To: []string{"*"}, Ports: []string{"48082/tcp"}}}}}}})
	if ip, err := n.resolve(context.Background(), "bob.warren"); !errors.Is(err, socks.ErrUnknownName) {
		t.Errorf("bob.warren resolved to %v (%v) while two peers claim it", ip, err)
	}
	rt := n.routes.Load()
	if rt.allows(bob, acl.TCP, 48082) || rt.allows(mallory, acl.TCP, 48082) {
		t.Error("a rule naming bob granted one of the two peers named bob")
	}
}

// TestRulesMatchKeys: repro (a) — a rule the coord bound to alice's key grants alice, under any
// name, and nothing to mallory calling herself alice.
func TestRulesMatchKeys(t *testing.T) {
	aliceID, _ := identity.Generate()
	malloryID, _ := identity.Generate()
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "bob", Expose: []Port{{"tcp", 48082}}})
	if err != nil {
		t.Fatal(err)
	}
	n.welcome = &control.Welcome{IPv4: netip.MustParseAddr("100.64.0.1")}
	rules := []control.ACL{{Network: "lan", Rules: []control.ACLRule{
		{From: []string{acl.KeyEntry(identity.Fingerprint(aliceID.Public()))}, To: []string{"bob"}, Ports: []string{"48082/tcp"}}}}}
	p := func(id *identity.Key, name, ip string) control.Peer {
		return control.Peer{Key: id.Public(), Name: name, IPs: []netip.Addr{netip.MustParseAddr(ip)}, Networks: []string{"lan"}}
	}
	alice, _ := peer.KeyOf(aliceID.Public())
	mallory, _ := peer.KeyOf(malloryID.Public())
	n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{ACLs: rules,
		Peers: []control.Peer{p(aliceID, "alice-old", "100.64.0.2"), p(malloryID, "alice", "100.64.0.3")}}})
	rt := n.routes.Load()
	if !rt.allows(alice, acl.TCP, 48082) {
		t.Error("alice, renamed, lost her grant")
	}
	if rt.allows(mallory, acl.TCP, 48082) {
		t.Error("mallory, named alice, got alice's grant")
	}
}

// TestNodeGoesByCoordName: the coord keeps a node's first name; the node goes by what Welcome says.
func TestNodeGoesByCoordName(t *testing.T) {
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "asked"})
	if err != nil {
		t.Fatal(err)
	}
	w := &control.Welcome{IPv4: netip.MustParseAddr("100.64.0.1"), Name: "kept"}
	n.welcome = w
	n.handleControl(&control.Msg{Type: control.TypeWelcome, Welcome: w})
	if ip, err := n.resolve(context.Background(), "kept.warren"); err != nil || ip != w.IPv4 {
		t.Errorf("kept.warren: %v %v", ip, err)
	}
	if _, err := n.resolve(context.Background(), "asked.warren"); err == nil {
		t.Error("the configured name still resolves to this node")
	}
	if got := n.Status().Self.Name; got != "kept" {
		t.Errorf("status name %q", got)
	}
}
