package node

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
)

// TestStreamStack: the first SYN of a TCP connection from the device to a peer opens a stream flow
// and that flow's later segments follow it to the device's stack; other TCP keeps the packet path,
// and a peer's packets of a stream flow are refused by the filter.
func TestStreamStack(t *testing.T) {
	n, b := testBridge()
	n.routes.Store(&routeTable{owner: map[netip.Addr]peer.Key{peer4: {1}, peer6: {1}}})
	s, err := netstack.New(netstack.Config{Output: func([]byte) {},
		DialEgress: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("not in this test") }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b.stacks[ownerTUN].Store(s)
	// A connection a peer opened over the packet path: the kernel's SYN-ACK was tracked.
	b.send(n, ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(22, 50000, packet.TCPSYN|packet.TCPACK, "")), ownerTUN)

	stream := func(pkt []byte) bool {
		t.Helper()
		p, ok := packet.Parse(pkt)
		if !ok {
			t.Fatal("bad test packet")
		}
		return n.streamStack(b, ownerTUN, &p) != nil
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"ACK before any SYN", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPACK, "x")), false},
		{"SYN to a peer", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPSYN, "")), true},
		{"its ACK", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPACK, "x")), true},
		{"its FIN", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPACK|packet.TCPFIN, "")), true},
		{"its RST", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPRST, "")), true},
		{"SYN to a peer over IPv6", ipPacket(self6, peer6, packet.ProtoTCP, tcpSeg(40001, 80, packet.TCPSYN, "")), true},
		{"the packet-path connection's ACK", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(22, 50000, packet.TCPACK, "x")), false},
		{"SYN-ACK of no flow", ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(22, 50001, packet.TCPSYN|packet.TCPACK, "")), false},
		{"SYN to an address no peer owns", ipPacket(self4, netip.MustParseAddr("100.64.0.9"), packet.ProtoTCP, tcpSeg(40002, 80, packet.TCPSYN, "")), false},
	} {
		if got := stream(c.pkt); got != c.want {
			t.Errorf("%s: to the stack %v, want %v", c.name, got, c.want)
		}
	}
	p, _ := packet.Parse(ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(80, 40000, packet.TCPACK, "x")))
	if v := b.verdict(&p, n.exposed, n.overlay); v != 0 {
		t.Errorf("a peer's segment of a stream flow: verdict %d, want 0 (refused)", v)
	}

	n.cfg.PacketPathTCP = true
	if stream(ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40003, 80, packet.TCPSYN, ""))) {
		t.Error("--packet-path: a SYN went to the stack")
	}
	n.cfg.PacketPathTCP = false
	b.stacks[ownerTUN].Store(nil)
	if stream(ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40004, 80, packet.TCPSYN, ""))) {
		t.Error("a SYN went to the stack of a device without one")
	}
}
