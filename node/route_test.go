package node

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

func ipv4Packet(src, dst string) []byte {
	p := make([]byte, 20)
	p[0] = 0x45
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func TestAddrs(t *testing.T) {
	src, dst, ok := addrs(ipv4Packet("100.64.0.1", "100.64.0.2"))
	if !ok || src.String() != "100.64.0.1" || dst.String() != "100.64.0.2" {
		t.Errorf("v4: %v %v %v", src, dst, ok)
	}
	v6 := make([]byte, 40)
	v6[0] = 0x60
	a, b := netip.MustParseAddr("fd7a::1").As16(), netip.MustParseAddr("fd7a::2").As16()
	copy(v6[8:], a[:])
	copy(v6[24:], b[:])
	if src, dst, ok := addrs(v6); !ok || src.String() != "fd7a::1" || dst.String() != "fd7a::2" {
		t.Errorf("v6: %v %v %v", src, dst, ok)
	}
	for _, bad := range [][]byte{nil, {0x45}, make([]byte, 39), {0x70, 0, 0, 0}} {
		if _, _, ok := addrs(bad); ok {
			t.Errorf("addrs(%x) ok", bad)
		}
	}
}

// testNode is a Node with a peer map and no network parts, enough for routing decisions.
func testNode(t *testing.T) (*Node, peer.Key, peer.Key) {
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "me"})
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
	n.receive(kb, ipv4Packet("100.64.0.2", "100.64.0.1")) // b as itself: accepted (no stack yet, so just not counted)
	if got := n.dropSpoofed.Load(); got != 0 {
		t.Fatalf("own-address packet dropped (%d)", got)
	}
	n.receive(kc, ipv4Packet("100.64.0.2", "100.64.0.1")) // c pretending to be b
	n.receive(peer.Key{9}, ipv4Packet("100.64.0.9", "100.64.0.1"))
	n.receive(kb, []byte{0x45, 0})
	if got := n.dropSpoofed.Load(); got != 3 {
		t.Errorf("spoofed/unknown/malformed drops = %d, want 3", got)
	}
	// After a delta removes c, its address no longer routes.
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{Remove: [][]byte{kc[:]}}})
	if _, ok := n.routes.Load().owner[netip.MustParseAddr("100.64.0.3")]; ok {
		t.Error("removed peer still routed")
	}
}

func TestResolve(t *testing.T) {
	n, _, _ := testNode(t)
	for name, want := range map[string]string{"b.warren": "100.64.0.2", "B": "100.64.0.2", "b.warren.": "100.64.0.2",
		"c": "100.64.0.3", "me.warren": "100.64.0.1", "100.64.0.7": "100.64.0.7"} {
		if ip, err := n.resolve(context.Background(), name); err != nil || ip.String() != want {
			t.Errorf("resolve(%q) = %v, %v; want %s", name, ip, err, want)
		}
	}
	if _, err := n.resolve(context.Background(), "nobody.warren"); !errors.Is(err, socks.ErrUnknownName) {
		t.Errorf("unknown name: %v", err)
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
