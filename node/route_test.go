package node

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"testing"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// testNode is a Node with a peer map and no network parts, enough for routing decisions.
func testNode(t *testing.T) (*Node, peer.Key, peer.Key) {
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "me", Logger: testkit.Logger(t, "me")})
	if err != nil {
		t.Fatal(err)
	}
	kb, kc := peer.Key{1}, peer.Key{2}
	n.welcome = &control.Welcome{IPv4: netip.MustParseAddr("100.64.0.1")}
	n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{Peers: []control.Peer{
		{Key: kb[:], Name: "B", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a::2")}},
		{Key: kc[:], Name: "c", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}},
	}}})
	return n, kb, kc
}

// TestReceiveDropsSpoofed: a peer may only send from its own virtual IPs.
func TestReceiveDropsSpoofed(t *testing.T) {
	n, kb, kc := testNode(t)
	n.receive(kb, ipPacket(peer4, self4, packet.ProtoUDP, nil)) // b as itself: accepted (no stack yet, so just not counted)
	if got := n.drops.spoofed.Load(); got != 0 {
		t.Fatalf("own-address packet dropped (%d)", got)
	}
	n.receive(kc, ipPacket(peer4, self4, packet.ProtoUDP, nil)) // c pretending to be b
	n.receive(peer.Key{9}, ipPacket(netip.MustParseAddr("100.64.0.9"), self4, packet.ProtoUDP, nil))
	n.receive(kb, []byte{0x45, 0})
	if got := n.drops.spoofed.Load(); got != 3 {
		t.Errorf("spoofed/unknown/malformed drops = %d, want 3", got)
	}
	// After a delta removes c, its address no longer routes.
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{Remove: [][]byte{kc[:]}}})
	if _, ok := n.routes.Load().owner[netip.MustParseAddr("100.64.0.3")]; ok {
		t.Error("removed peer still routed")
	}
}

// TestResolve: the proxy finds peers by NAME.warren only; a bare name is a DNS name, even one a peer
// has (its owner picked it: it must not stand in for "localhost" or the user's own "db"). `warren
// ping` takes bare peer names too.
func TestResolve(t *testing.T) {
	n, _, _ := testNode(t)
	ctx := context.Background()
	for name, want := range map[string]string{"b.warren": "100.64.0.2", "B.Warren": "100.64.0.2", "b.warren.": "100.64.0.2",
		"c.warren": "100.64.0.3", "me.warren": "100.64.0.1", "100.64.0.7": "100.64.0.7"} {
		if ip, err := n.resolve(ctx, name); err != nil || ip.String() != want {
			t.Errorf("resolve(%q) = %v, %v; want %s", name, ip, err, want)
		}
	}
	if _, err := n.resolve(ctx, "nobody.warren"); !errors.Is(err, socks.ErrUnknownName) {
		t.Errorf("unknown name: %v", err)
	}
	// A peer named like a host name. OverlayOnly keeps DNS out of the test: a bare name is then
	// refused, never answered from the peer map.
	n.cfg.OverlayOnly = true
	kl := peer.Key{7}
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{Upsert: []control.Peer{
		{Key: kl[:], Name: "localhost", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.66")}}}}})
	if ip, err := n.resolve(ctx, "localhost.warren"); err != nil || ip.String() != "100.64.0.66" {
		t.Fatalf("resolve(localhost.warren) = %v, %v; want the peer", ip, err)
	}
	for _, name := range []string{"localhost", "LOCALHOST", "localhost.", "b", "c"} {
		if ip, err := n.resolve(ctx, name); err == nil {
			t.Errorf("resolve(%q) = %v: a bare name resolved to a peer", name, ip)
		}
	}
	for name, want := range map[string]string{"b": "100.64.0.2", "C": "100.64.0.3", "localhost": "100.64.0.66", "me": "100.64.0.1"} {
		if ip, err := n.resolvePeer(ctx, name); err != nil || ip.String() != want {
			t.Errorf("resolvePeer(%q) = %v, %v; want %s", name, ip, err, want)
		}
	}
}

func TestProxyOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:1080": true, "[::1]:1080": true, "localhost:1": true,
		"0.0.0.0:1080": false, ":1080": false, "192.0.2.1:1080": false} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
	if _, err := New(Config{StateDir: "x", Coord: "c:1", Name: "n", SOCKS: "0.0.0.0:1080"}); err == nil {
		t.Error("node accepted a public SOCKS address")
	}
}

func TestAPIHostCheck(t *testing.T) {
	h := hostCheck(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for host, want := range map[string]int{"local.warren": http.StatusTeapot, "evil.example": http.StatusForbidden, "127.0.0.1": http.StatusForbidden} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/status", nil)
		req.Host = host
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}

// TestBuildRoutes: the route table and peer links of a peer map under access rules.
func TestBuildRoutes(t *testing.T) {
	a4, a6, b4 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a::2"), netip.MustParseAddr("100.64.0.3")
	ep := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:7000")}
	ka, kb, kc := peer.Key{1}, peer.Key{2}, peer.Key{3}
	peers := map[peer.Key]control.Peer{
		ka: {Key: ka[:], Name: "Alpha", Tag: "ci", IPs: []netip.Addr{a4, a6}, Online: true, Endpoints: ep, Mapping: control.MappingIndependent, Networks: []string{"lab"}},
		kb: {Key: kb[:], Name: "beta", IPs: []netip.Addr{b4}, Endpoints: ep, Networks: []string{"lab", "open"}},
		kc: {Key: kc[:], Name: "gamma", Tag: "ci", Networks: []string{"lab"}}, // no addresses yet
	}
	lab, err := acl.Compile([]control.ACLRule{{From: []string{"tag:ci"}, To: []string{"me"}, Ports: []string{"22/tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	self := acl.Member{Name: "me"}
	for _, c := range []struct {
		name       string
		peers      map[peer.Key]control.Peer
		policies   map[string]*acl.Policy
		owner      map[netip.Addr]peer.Key
		byName     map[string]netip.Addr
		restricted []peer.Key // peers with a grant
		infos      map[peer.Key]peer.Info
	}{
		{name: "no peers"},
		{name: "no rules", peers: peers,
			owner:  map[netip.Addr]peer.Key{a4: ka, a6: ka, b4: kb},
			byName: map[string]netip.Addr{"alpha": a4, "beta": b4},
			infos:  map[peer.Key]peer.Info{ka: {Key: ka, Name: "Alpha", Endpoints: ep, Mapping: control.MappingIndependent}, kb: {Key: kb, Name: "beta"}, kc: {Key: kc, Name: "gamma"}}},
		{name: "rules in lab", peers: peers, policies: map[string]*acl.Policy{"lab": lab},
			owner:      map[netip.Addr]peer.Key{a4: ka, a6: ka, b4: kb},
			byName:     map[string]netip.Addr{"alpha": a4, "beta": b4},
			restricted: []peer.Key{ka, kc}, // beta also shares "open", which has no rules
			infos:      map[peer.Key]peer.Info{ka: {Key: ka, Name: "Alpha", Endpoints: ep, Mapping: control.MappingIndependent}, kb: {Key: kb, Name: "beta"}, kc: {Key: kc, Name: "gamma"}}},
	} {
		rt, infos := buildRoutes(c.peers, c.policies, self)
		if len(rt.owner) != len(c.owner) || (len(c.owner) > 0 && !reflect.DeepEqual(rt.owner, c.owner)) {
			t.Errorf("%s: owner %v, want %v", c.name, rt.owner, c.owner)
		}
		if len(rt.byName) != len(c.byName) || (len(c.byName) > 0 && !reflect.DeepEqual(rt.byName, c.byName)) {
			t.Errorf("%s: byName %v, want %v", c.name, rt.byName, c.byName)
		}
		if len(rt.peers) != len(c.peers) {
			t.Errorf("%s: %d peers for fan-out, want %d", c.name, len(rt.peers), len(c.peers))
		}
		if len(rt.grants) != len(c.restricted) {
			t.Errorf("%s: %d peers restricted, want %d", c.name, len(rt.grants), len(c.restricted))
		}
		for _, k := range c.restricted {
			if !rt.allows(k, acl.TCP, 22) || rt.allows(k, acl.TCP, 80) {
				t.Errorf("%s: peer %x's grant is not tcp/22 alone", c.name, k[:1])
			}
		}
		if len(c.restricted) == 2 && rt.grants[c.restricted[0]] != rt.grants[c.restricted[1]] {
			t.Errorf("%s: peers matched by the same rules do not share their grant", c.name)
		}
		got := make(map[peer.Key]peer.Info)
		for _, i := range infos {
			got[i.Key] = i
		}
		if len(got) != len(c.infos) || (len(c.infos) > 0 && !reflect.DeepEqual(got, c.infos)) {
			t.Errorf("%s: links %+v, want %+v", c.name, got, c.infos)
		}
	}
	if len(peers) != 3 || peers[ka].Name != "Alpha" {
		t.Error("buildRoutes changed its input")
	}
}
