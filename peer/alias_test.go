package peer

import (
	"net"
	"net/netip"
	"testing"

	"github.com/quic-go/quic-go"
)

// TestAliasRedirects: packets for an aliased address go to its alias, whatever the socket under the
// aliasConn; removing the alias sends them where they were addressed again. Over a UDP socket the
// transport's conn keeps quic-go's fast-path methods.
func TestAliasRedirects(t *testing.T) {
	n := testNet(t)
	self, old, moved := n.MustListen("10.0.0.1:1"), n.MustListen("10.0.0.2:2"), n.MustListen("10.0.0.3:3")
	for _, c := range []net.PacketConn{self, old, moved} {
		defer c.Close()
	}
	a, tc := newAliasConn(self)
	if tc != net.PacketConn(a) {
		t.Fatal("over a non-UDP conn the transport does not get the aliasConn")
	}
	buf := make([]byte, 16)
	expect := func(c net.PacketConn, what string) {
		t.Helper()
		nr, _, err := c.ReadFrom(buf)
		if err != nil || string(buf[:nr]) != what {
			t.Fatalf("read %q, %v; want %q", buf[:nr], err, what)
		}
	}
	to := net.UDPAddrFromAddrPort(old.AddrPort())
	tc.WriteTo([]byte("plain"), to)
	expect(old, "plain")
	a.setAlias(old.AddrPort(), moved.AddrPort())
	if got := a.target(old.AddrPort()); got != moved.AddrPort() {
		t.Fatalf("target %v, want %v", got, moved.AddrPort())
	}
	tc.WriteTo([]byte("aliased"), to)
	expect(moved, "aliased")
	a.setAlias(old.AddrPort(), netip.AddrPort{})
	tc.WriteTo([]byte("back"), to)
	expect(old, "back")

	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, tc := newAliasConn(uc); tc == nil {
		t.Fatal("no transport conn")
	} else if _, ok := tc.(quic.OOBCapablePacketConn); !ok {
		t.Fatal("over a UDP socket the transport's conn lost quic-go's fast paths")
	}
}
