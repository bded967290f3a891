package node

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

var (
	self4  = netip.MustParseAddr("100.64.0.1")
	self6  = netip.MustParseAddr("fd7a:7761:7272::1")
	peer4  = netip.MustParseAddr("100.64.0.2")
	peer6  = netip.MustParseAddr("fd7a:7761:7272::2")
	bcast4 = netip.MustParseAddr("100.127.255.255")
)

// ipPacket builds an IPv4 or IPv6 packet around transport header t (checksums left zero: the filter
// does not read them).
func ipPacket(src, dst netip.Addr, proto uint8, t []byte) []byte {
	if src.Is4() {
		p := make([]byte, 20, 20+len(t))
		p[0], p[8], p[9] = 0x45, 64, proto
		binary.BigEndian.PutUint16(p[2:], uint16(20+len(t)))
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		return append(p, t...)
	}
	p := make([]byte, 40, 40+len(t))
	p[0], p[6], p[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(t)))
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, t...)
}

func tcpSeg(sport, dport uint16, flags uint8, payload string) []byte {
	t := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], 1000)
	binary.BigEndian.PutUint32(t[8:], 2000)
	t[12], t[13] = 5<<4, flags
	return append(t, payload...)
}

func udpDgram(sport, dport uint16) []byte {
	t := make([]byte, 8)
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	return t
}

func icmpMsg(typ uint8, id uint16, rest []byte) []byte {
	t := make([]byte, 8, 8+len(rest))
	t[0] = typ
	binary.BigEndian.PutUint16(t[4:], id)
	return append(t, rest...)
}

func testBridge() (*Node, *tunBridge) {
	n := &Node{exposed: map[Port]bool{{"tcp", 22}: true, {"udp", 27015}: true},
		overlay: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")}}
	return n, &tunBridge{flows: newFlowTable(maxFlows), self4: self4, self6: self6}
}

// send records a packet leaving through the device, as outputTUN does.
func (b *tunBridge) send(n *Node, pkt []byte, owner uint8) {
	p, ok := parsePacket(pkt)
	if !ok {
		panic("bad test packet")
	}
	if k, ok := p.outboundFlow(n.isFanOut(p.dst)); ok {
		b.flows.track(k, owner)
	}
}

func TestTUNFilter(t *testing.T) {
	n, b := testBridge()
	// Flows this node opened: TCP from the device, UDP from the netstack, a broadcast, a ping.
	b.send(n, ipPacket(self4, peer4, protoTCP, tcpSeg(40000, 80, tcpSYN, "")), ownerTUN)
	b.send(n, ipPacket(self6, peer6, protoUDP, udpDgram(5353, 53)), ownerStack)
	b.send(n, ipPacket(self4, bcast4, protoUDP, udpDgram(4444, 27016)), ownerTUN)
	b.send(n, ipPacket(self4, peer4, protoICMP, icmpMsg(8, 77, nil)), ownerStack)

	for _, c := range []struct {
		name string
		pkt  []byte
		want uint8
	}{
		{"SYN to exposed port", ipPacket(peer4, self4, protoTCP, tcpSeg(50000, 22, tcpSYN, "")), ownerTUN},
		{"SYN to exposed port over IPv6", ipPacket(peer6, self6, protoTCP, tcpSeg(50000, 22, tcpSYN, "")), ownerTUN},
		{"SYN to unexposed port", ipPacket(peer4, self4, protoTCP, tcpSeg(50000, 23, tcpSYN, "")), 0},
		{"ACK without a flow", ipPacket(peer4, self4, protoTCP, tcpSeg(50000, 22, tcpACK, "x")), 0},
		{"SYN-ACK of our flow", ipPacket(peer4, self4, protoTCP, tcpSeg(80, 40000, tcpSYN|tcpACK, "")), ownerTUN},
		{"our flow from another port", ipPacket(peer4, self4, protoTCP, tcpSeg(81, 40000, tcpACK, "")), 0},
		{"TCP to someone else", ipPacket(peer4, netip.MustParseAddr("100.64.0.9"), protoTCP, tcpSeg(50000, 22, tcpSYN, "")), 0},
		{"TCP to the broadcast address", ipPacket(peer4, bcast4, protoTCP, tcpSeg(50000, 22, tcpSYN, "")), 0},
		{"UDP to exposed port", ipPacket(peer4, self4, protoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP broadcast to exposed port", ipPacket(peer4, bcast4, protoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP limited broadcast to exposed port", ipPacket(peer4, netip.MustParseAddr("255.255.255.255"), protoUDP, udpDgram(1, 27015)), ownerTUN},
		{"UDP broadcast to unexposed port", ipPacket(peer4, bcast4, protoUDP, udpDgram(1, 27016)), 0},
		{"UDP to unexposed port", ipPacket(peer4, self4, protoUDP, udpDgram(1, 1234)), 0},
		{"UDP reply to the netstack", ipPacket(peer6, self6, protoUDP, udpDgram(53, 5353)), ownerStack},
		{"UDP reply to our broadcast", ipPacket(peer4, self4, protoUDP, udpDgram(27016, 4444)), ownerTUN},
		{"echo request", ipPacket(peer4, self4, protoICMP, icmpMsg(8, 5, nil)), ownerTUN},
		{"echo reply to the netstack's ping", ipPacket(peer4, self4, protoICMP, icmpMsg(0, 77, nil)), ownerStack},
		{"echo reply to ping(8)", ipPacket(peer4, self4, protoICMP, icmpMsg(0, 78, nil)), ownerTUN},
		{"ICMPv6 echo request", ipPacket(peer6, self6, protoICMPv6, icmpMsg(128, 5, nil)), ownerTUN},
		{"neighbour solicitation", ipPacket(peer6, self6, protoICMPv6, icmpMsg(135, 0, nil)), 0},
		{"port unreachable for our flow", ipPacket(peer6, self6, protoICMPv6,
			icmpMsg(1, 0, ipPacket(self6, peer6, protoUDP, udpDgram(5353, 53)))), ownerStack},
		{"port unreachable for no flow", ipPacket(peer4, self4, protoICMP,
			icmpMsg(3, 0, ipPacket(self4, peer4, protoUDP, udpDgram(9, 9)))), 0},
		{"GRE", ipPacket(peer4, self4, 47, make([]byte, 8)), 0},
	} {
		p, ok := parsePacket(c.pkt)
		if !ok {
			t.Errorf("%s: not parsed", c.name)
			continue
		}
		if got := n.tunVerdict(b, &p); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

func TestParsePacketIPv6Extensions(t *testing.T) {
	// Hop-by-hop options, then a first fragment, then UDP.
	ext := []byte{44, 0, 0, 0, 0, 0, 0, 0, protoUDP, 0, 0, 1, 0, 0, 0, 1}
	pkt := ipPacket(peer6, self6, 0, append(ext, udpDgram(1, 27015)...))
	p, ok := parsePacket(pkt)
	if !ok || p.proto != protoUDP || p.dport != 27015 || p.fragment {
		t.Errorf("parsed %+v ok=%v", p, ok)
	}
	// A later fragment: no transport header.
	binary.BigEndian.PutUint16(pkt[40+8+2:], 100<<3)
	if p, ok := parsePacket(pkt); !ok || !p.fragment {
		t.Errorf("later fragment: %+v ok=%v", p, ok)
	}
	for _, bad := range [][]byte{nil, {0x45}, make([]byte, 20), ipPacket(peer4, self4, protoTCP, []byte{1, 2})} {
		if _, ok := parsePacket(bad); ok {
			t.Errorf("parsed %x", bad)
		}
	}
}

func TestTCPReset(t *testing.T) {
	for _, c := range []struct {
		src, dst netip.Addr
		flags    uint8
		payload  string
		seq, ack uint32
		rflags   uint8
	}{
		{peer4, self4, tcpSYN, "", 0, 1001, tcpRST | tcpACK},
		{peer6, self6, tcpSYN, "", 0, 1001, tcpRST | tcpACK},
		{peer4, self4, tcpACK | tcpFIN, "abc", 2000, 0, tcpRST},
	} {
		in := ipPacket(c.src, c.dst, protoTCP, tcpSeg(50000, 23, c.flags, c.payload))
		p, _ := parsePacket(in)
		out := tcpReset(&p, in)
		r, ok := parsePacket(out)
		if !ok || r.src != c.dst || r.dst != c.src || r.sport != 23 || r.dport != 50000 || r.tcpFlags != c.rflags {
			t.Fatalf("reset %+v", r)
		}
		if seq, ack := binary.BigEndian.Uint32(r.transport[4:]), binary.BigEndian.Uint32(r.transport[8:]); seq != c.seq || ack != c.ack {
			t.Errorf("seq %d ack %d, want %d %d", seq, ack, c.seq, c.ack)
		}
		// Checksums verify: the sum over the covered bytes is all ones.
		var pseudo []byte
		if c.src.Is4() {
			if checksum(0, out[:20]) != 0xffff {
				t.Error("bad IPv4 header checksum")
			}
			pseudo = append(append(r.src.AsSlice(), r.dst.AsSlice()...), 0, protoTCP, 0, 20)
		} else {
			pseudo = append(append(r.src.AsSlice(), r.dst.AsSlice()...), 0, 0, 0, 20, 0, 0, 0, protoTCP)
		}
		if checksum(checksum(0, pseudo), r.transport) != 0xffff {
			t.Error("bad TCP checksum")
		}
		if tcpReset(&r, out) != nil {
			t.Error("answered a RST with a RST")
		}
	}
}

func TestFlowTableBoundedAndExpiring(t *testing.T) {
	ft := newFlowTable(100)
	for i := range 1000 {
		ft.track(flowKey{proto: protoUDP, local: self4, remote: peer4, lport: uint16(i), rport: 53}, ownerTUN)
	}
	if ft.len() > 100 {
		t.Errorf("table grew to %d", ft.len())
	}
	k := flowKey{proto: protoICMP, local: self4, remote: peer4, lport: 1}
	ft.track(k, ownerStack)
	if o, ok := ft.lookup(k); !ok || o != ownerStack {
		t.Fatal("fresh flow not found")
	}
	ft.start = ft.start.Add(-idleICMP - time.Second) // age every entry
	if _, ok := ft.lookup(k); ok {
		t.Error("idle flow not expired")
	}
}

func TestOutputTUNSourceCheck(t *testing.T) {
	n, b := testBridge()
	// Packets the kernel sends with another source (fe80::, ::) or non-UDP fan-out never leave; they
	// are dropped before output, which this Node (no routes, no peers) would otherwise reach.
	for _, pkt := range [][]byte{
		ipPacket(netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::2"), protoICMPv6, icmpMsg(133, 0, nil)),
		ipPacket(self6, netip.MustParseAddr("ff02::16"), protoICMPv6, icmpMsg(143, 0, nil)),
		ipPacket(self4, netip.MustParseAddr("224.0.0.22"), 2, make([]byte, 8)),
	} {
		n.outputTUN(b, pkt)
	}
	if got := b.dropOutbound.Load(); got != 3 {
		t.Errorf("dropped %d of 3", got)
	}
}
