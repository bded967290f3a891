package node

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
)

// TestDialLocalProxyHeaderAndWhois: a local dial for a peer on a +proxy port starts with the PROXY
// v2 header of its flow, whois names the peer by the client address the service saw, and the entry
// goes when the connection closes.
func TestDialLocalProxyHeaderAndWhois(t *testing.T) {
	var routes atomic.Pointer[routeTable]
	n := &Node{log: testkit.Logger(t, "node"), proxyHeader: map[uint16]bool{8080: true}}
	n.peers = newPeerState("bob", n.log, &routes)
	key := peer.Key{1, 2, 3}
	aliceIP := netip.MustParseAddr("100.64.0.2")
	n.peers.peers[key] = control.Peer{Key: key[:], Name: "alice", IPs: []netip.Addr{aliceIP}, Networks: []string{"lan"}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	flow := netstack.Flow{Src: netip.AddrPortFrom(aliceIP, 40000), Dst: netip.MustParseAddrPort("100.64.0.1:8080")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// As the netstack's path does: no key, the peer is found by the flow's source address.
	c, err := n.dialLocal(ctx, "tcp", ln.Addr().String(), peer.Key{}, flow)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer srv.Close()
	want := appendProxyV2(nil, flow.Src, flow.Dst)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != string(want) {
		t.Fatalf("header %x, want %x (%v)", got, want, err)
	}
	seen := srv.RemoteAddr().(*net.TCPAddr).AddrPort()
	w, ok := n.Whois(seen)
	if !ok || w.Name != "alice" || w.Key != identity.Fingerprint(key[:]) || w.Source != flow.Src.String() || w.Port != 8080 {
		t.Fatalf("whois %v: %+v %v", seen, w, ok)
	}
	c.Close()
	if _, ok := n.Whois(seen); ok {
		t.Error("whois entry outlived its connection")
	}
}
