package node

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/packet/packettest"
)

var (
	self4  = netip.MustParseAddr("100.64.0.1")
	self6  = netip.MustParseAddr("fd7a:7761:7272::1")
	peer4  = netip.MustParseAddr("100.64.0.2")
	peer6  = netip.MustParseAddr("fd7a:7761:7272::2")
	bcast4 = netip.MustParseAddr("100.127.255.255")
)

// Test packet builders (checksums left zero: the filters do not read them).
var (
	ipPacket = packettest.IP
	tcpSeg   = packettest.TCP
	udpDgram = packettest.UDP
	icmpMsg  = packettest.ICMP
)

func testBridge() (*Node, *tunBridge) {
	n := &Node{exposed: map[Port]bool{{"tcp", 22}: true, {"udp", 27015}: true},
		overlay: overlay{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")}}
	return n, &tunBridge{flows: packet.NewFlowTable(maxFlows), self4: self4, self6: self6}
}

// send records a packet leaving through the device, as outputTUN does.
func (b *tunBridge) send(n *Node, pkt []byte, owner uint8) {
	p, ok := packet.Parse(pkt)
	if !ok {
		panic("bad test packet")
	}
	b.trackOut(&p, owner, n.overlay.fanOut(p.Dst))
}

// TestTUNFilterForgetsClosed: a TCP connection that ended (a FIN either way, or a RST) is forgotten
// IdleTCPClosed after its last segment, an open one is kept; synctest's clock.
func TestTUNFilterForgetsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, b := testBridge()
		seg := func(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
			return ipPacket(src, dst, packet.ProtoTCP, tcpSeg(sport, dport, flags, ""))
		}
		verdict := func(pkt []byte) uint8 {
			p, ok := packet.Parse(pkt)
			if !ok {
				t.Fatal("bad test packet")
			}
			return b.verdict(&p, n.exposed, n.overlay)
		}
		// Four connections this node opened to port 80 of a peer: one it closes, one the peer
		// closes, one reset, one left open.
		for port := uint16(40001); port <= 40004; port++ {
			b.send(n, seg(self4, peer4, port, 80, packet.TCPSYN), ownerTUN)
		}
		b.send(n, seg(self4, peer4, 40001, 80, packet.TCPFIN|packet.TCPACK), ownerTUN)
		if v := verdict(seg(peer4, self4, 80, 40002, packet.TCPFIN|packet.TCPACK)); v != ownerTUN {
			t.Fatalf("the peer's FIN: verdict %d", v)
		}
		b.send(n, seg(self4, peer4, 40003, 80, packet.TCPRST), ownerTUN)
		time.Sleep(packet.IdleTCPClosed + time.Second)
		for port, want := range map[uint16]uint8{40001: 0, 40002: 0, 40003: 0, 40004: ownerTUN} {
			if v := verdict(seg(peer4, self4, 80, port, packet.TCPACK)); v != want {
				t.Errorf("connection from port %d: verdict %d after %v, want %d", port, v, packet.IdleTCPClosed+time.Second, want)
			}
		}
	})
}

func TestTUNFilter(t *testing.T) {
	n, b := testBridge()
	// Flows this node opened: TCP from the device, UDP from the netstack, a broadcast, a ping.
	b.send(n, ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPSYN, "")), ownerTUN)
	b.send(n, ipPacket(self6, peer6, packet.ProtoUDP, udpDgram(5353, 53)), ownerStack)
	b.send(n, ipPacket(self4, bcast4, packet.ProtoUDP, udpDgram(4444, 27016)), ownerTUN)
	b.send(n, ipPacket(self4, peer4, packet.ProtoICMP, icmpMsg(8, 77, nil)), ownerStack)

	for _, c := range []struct {
		name string
		pkt  []byte
		want uint8
	}{
		{"SYN to exposed port", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), ownerTUN},
		{"SYN to exposed port over IPv6", ipPacket(peer6, self6, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), ownerTUN},
		{"SYN to unexposed port", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(50000, 23, packet.TCPSYN, "")), 0},
		{"ACK without a flow", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPACK, "x")), 0},
		{"SYN-ACK of our flow", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(80, 40000, packet.TCPSYN|packet.TCPACK, "")), ownerTUN},
		{"our flow from another port", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(81, 40000, packet.TCPACK, "")), 0},
		{"TCP to someone else", ipPacket(peer4, netip.MustParseAddr("100.64.0.9"), packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), 0},
		{"TCP to the broadcast address", ipPacket(peer4, bcast4, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), 0},
		{"UDP to exposed port", ipPacket(peer4, self4, packet.ProtoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP broadcast to exposed port", ipPacket(peer4, bcast4, packet.ProtoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP limited broadcast to exposed port", ipPacket(peer4, netip.MustParseAddr("255.255.255.255"), packet.ProtoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP broadcast to unexposed port", ipPacket(peer4, bcast4, packet.ProtoUDP, udpDgram(1, 27016)), 0},
		{"UDP to unexposed port", ipPacket(peer4, self4, packet.ProtoUDP, udpDgram(1, 1234)), 0},
		{"UDP reply to the netstack", ipPacket(peer6, self6, packet.ProtoUDP, udpDgram(53, 5353)), ownerStack},
		{"UDP reply to our broadcast", ipPacket(peer4, self4, packet.ProtoUDP, udpDgram(27016, 4444)), ownerTUN},
		{"echo request", ipPacket(peer4, self4, packet.ProtoICMP, icmpMsg(8, 5, nil)), ownerTUN},
		{"echo reply to the netstack's ping", ipPacket(peer4, self4, packet.ProtoICMP, icmpMsg(0, 77, nil)), ownerStack},
		{"echo reply to ping(8)", ipPacket(peer4, self4, packet.ProtoICMP, icmpMsg(0, 78, nil)), ownerTUN},
		{"ICMPv6 echo request", ipPacket(peer6, self6, packet.ProtoICMPv6, icmpMsg(128, 5, nil)), ownerTUN},
		{"neighbour solicitation", ipPacket(peer6, self6, packet.ProtoICMPv6, icmpMsg(135, 0, nil)), 0},
		{"port unreachable for our flow", ipPacket(peer6, self6, packet.ProtoICMPv6,
			icmpMsg(1, 0, ipPacket(self6, peer6, packet.ProtoUDP, udpDgram(5353, 53)))), ownerStack},
		{"port unreachable for no flow", ipPacket(peer4, self4, packet.ProtoICMP,
			icmpMsg(3, 0, ipPacket(self4, peer4, packet.ProtoUDP, udpDgram(9, 9)))), 0},
		{"GRE", ipPacket(peer4, self4, 47, make([]byte, 8)), 0},
	} {
		p, ok := packet.Parse(c.pkt)
		if !ok {
			t.Errorf("%s: not parsed", c.name)
			continue
		}
		if got := b.verdict(&p, n.exposed, n.overlay); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

func TestOutputTUNSourceCheck(t *testing.T) {
	n, b := testBridge()
	// Packets the kernel sends with another source (fe80::, ::) or non-UDP fan-out never leave; they
	// are dropped before output, which this Node (no routes, no peers) would otherwise reach.
	for _, pkt := range [][]byte{
		ipPacket(netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::2"), packet.ProtoICMPv6, icmpMsg(133, 0, nil)),
		ipPacket(self6, netip.MustParseAddr("ff02::16"), packet.ProtoICMPv6, icmpMsg(143, 0, nil)),
		ipPacket(self4, netip.MustParseAddr("224.0.0.22"), 2, make([]byte, 8)),
	} {
		n.outputTUN(b, ownerTUN, pkt)
	}
	if got := b.dropOutbound.Load(); got != 3 {
		t.Errorf("dropped %d of 3", got)
	}
}
