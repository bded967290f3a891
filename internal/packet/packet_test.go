package packet

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	pt "github.com/warren-net/warren/internal/packet/packettest"
)

var (
	self4 = netip.MustParseAddr("100.64.0.1")
	self6 = netip.MustParseAddr("fd7a:7761:7272::1")
	peer4 = netip.MustParseAddr("100.64.0.2")
	peer6 = netip.MustParseAddr("fd7a:7761:7272::2")
)

func TestAddrs(t *testing.T) {
	src, dst, ok := Addrs(pt.IP(self4, peer4, ProtoUDP, nil))
	if !ok || src != self4 || dst != peer4 {
		t.Errorf("v4: %v %v %v", src, dst, ok)
	}
	if src, dst, ok := Addrs(pt.IP(self6, peer6, ProtoUDP, nil)); !ok || src != self6 || dst != peer6 {
		t.Errorf("v6: %v %v %v", src, dst, ok)
	}
	for _, bad := range [][]byte{nil, {0x45}, make([]byte, 39), {0x70, 0, 0, 0}} {
		if _, _, ok := Addrs(bad); ok {
			t.Errorf("Addrs(%x) ok", bad)
		}
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name string
		pkt  []byte
		want Packet // Transport and ICMPQuote are not compared
	}{
		{"TCP SYN", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPSYN, "")),
			Packet{Src: peer4, Dst: self4, Proto: ProtoTCP, SPort: 5000, DPort: 22, TCPFlags: TCPSYN}},
		{"TCP cut before the flags", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPSYN, "")[:8]),
			Packet{Src: peer4, Dst: self4, Proto: ProtoTCP, SPort: 5000, DPort: 22}},
		{"UDP over IPv6", pt.IP(peer6, self6, ProtoUDP, pt.UDP(53, 5353)),
			Packet{Src: peer6, Dst: self6, Proto: ProtoUDP, SPort: 53, DPort: 5353}},
		{"echo request", pt.IP(peer4, self4, ProtoICMP, pt.ICMP(8, 77, nil)),
			Packet{Src: peer4, Dst: self4, Proto: ProtoICMP, SPort: 77, DPort: 77, ICMPEcho: true}},
		{"ICMPv6 echo reply", pt.IP(peer6, self6, ProtoICMPv6, pt.ICMP(129, 5, nil)),
			Packet{Src: peer6, Dst: self6, Proto: ProtoICMPv6, SPort: 5, DPort: 5, ICMPEcho: true, ICMPReply: true}},
		{"port unreachable", pt.IP(peer4, self4, ProtoICMP, pt.ICMP(3, 0, pt.IP(self4, peer4, ProtoUDP, pt.UDP(9, 9)))),
			Packet{Src: peer4, Dst: self4, Proto: ProtoICMP, ICMPError: true}},
		{"other protocol", pt.IP(peer4, self4, 47, nil), Packet{Src: peer4, Dst: self4, Proto: 47}},
	} {
		p, ok := Parse(c.pkt)
		if !ok {
			t.Errorf("%s: not parsed", c.name)
			continue
		}
		p.Transport, p.ICMPQuote = nil, nil
		if !reflect.DeepEqual(p, c.want) {
			t.Errorf("%s: %+v, want %+v", c.name, p, c.want)
		}
	}
	// An ICMP error's quote is the quoted packet.
	inner := pt.IP(self4, peer4, ProtoUDP, pt.UDP(9, 9))
	if p, _ := Parse(pt.IP(peer4, self4, ProtoICMP, pt.ICMP(3, 0, inner))); !bytes.Equal(p.ICMPQuote, inner) {
		t.Errorf("quote %x, want %x", p.ICMPQuote, inner)
	}
	// An IPv4 later fragment: no transport header needed.
	frag := pt.IP(peer4, self4, ProtoTCP, []byte{1})
	binary.BigEndian.PutUint16(frag[6:], 100)
	if p, ok := Parse(frag); !ok || !p.Fragment || p.DPort != 0 {
		t.Errorf("later fragment: %+v ok=%v", p, ok)
	}
	// IPv4 options: the transport header starts after them.
	opt := pt.IP(peer4, self4, ProtoUDP, append(make([]byte, 4), pt.UDP(1, 2)...))
	opt[0] = 0x46
	if p, ok := Parse(opt); !ok || p.DPort != 2 {
		t.Errorf("IPv4 options: %+v ok=%v", p, ok)
	}
}

func TestParseIPv6Extensions(t *testing.T) {
	// Hop-by-hop options, then a first fragment, then UDP.
	ext := []byte{44, 0, 0, 0, 0, 0, 0, 0, ProtoUDP, 0, 0, 1, 0, 0, 0, 1}
	pkt := pt.IP(peer6, self6, 0, append(ext, pt.UDP(1, 27015)...))
	p, ok := Parse(pkt)
	if !ok || p.Proto != ProtoUDP || p.DPort != 27015 || p.Fragment {
		t.Errorf("parsed %+v ok=%v", p, ok)
	}
	// A later fragment: no transport header.
	binary.BigEndian.PutUint16(pkt[40+8+2:], 100<<3)
	if p, ok := Parse(pkt); !ok || !p.Fragment {
		t.Errorf("later fragment: %+v ok=%v", p, ok)
	}
	// 7 destination options headers are walked, 8 are not.
	for n, want := range map[int]bool{7: true, 8: false} {
		var ext []byte
		for i := range n {
			next := byte(60)
			if i == n-1 {
				next = ProtoTCP
			}
			ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0)
		}
		if _, ok := Parse(pt.IP(peer6, self6, 60, append(ext, pt.TCP(1, 22, TCPSYN, "")...))); ok != want {
			t.Errorf("%d extension headers: parsed=%v, want %v", n, ok, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	badIHL := pt.IP(peer4, self4, ProtoUDP, pt.UDP(1, 2))
	badIHL[0] = 0x44
	longIHL := pt.IP(peer4, self4, ProtoUDP, nil)
	longIHL[0] = 0x4f
	for name, bad := range map[string][]byte{
		"empty": nil, "one byte": {0x45}, "short IPv4": make([]byte, 19), "short IPv6": append([]byte{0x60}, make([]byte, 38)...),
		"version 7":    {0x70, 0, 0, 0},
		"IHL under 20": badIHL, "IHL past the end": longIHL,
		"TCP without ports":             pt.IP(peer4, self4, ProtoTCP, []byte{1, 2}),
		"UDP without ports":             pt.IP(peer6, self6, ProtoUDP, []byte{1, 2, 3}),
		"ICMP under 8 bytes":            pt.IP(peer4, self4, ProtoICMP, []byte{8, 0, 0, 0}),
		"extension header past the end": pt.IP(peer6, self6, 0, []byte{ProtoUDP, 4}),
	} {
		if p, ok := Parse(bad); ok {
			t.Errorf("%s: parsed %+v", name, p)
		}
	}
}

func TestFlows(t *testing.T) {
	out, _ := Parse(pt.IP(self4, peer4, ProtoTCP, pt.TCP(40000, 80, TCPSYN, "")))
	in, _ := Parse(pt.IP(peer4, self4, ProtoTCP, pt.TCP(80, 40000, TCPSYN|TCPACK, "")))
	if k, ok := out.OutboundFlow(false); !ok || k != in.InboundFlow() {
		t.Errorf("TCP: out %+v, in %+v", k, in.InboundFlow())
	}
	bcast, _ := Parse(pt.IP(self4, netip.MustParseAddr("100.127.255.255"), ProtoUDP, pt.UDP(4444, 27016)))
	reply, _ := Parse(pt.IP(peer4, self4, ProtoUDP, pt.UDP(27016, 4444)))
	if k, ok := bcast.OutboundFlow(true); !ok || k != reply.WildcardFlow() {
		t.Errorf("broadcast: out %+v, reply %+v", k, reply.WildcardFlow())
	}
	ping, _ := Parse(pt.IP(self6, peer6, ProtoICMPv6, pt.ICMP(128, 7, nil)))
	pong, _ := Parse(pt.IP(peer6, self6, ProtoICMPv6, pt.ICMP(129, 7, nil)))
	if k, ok := ping.OutboundFlow(false); !ok || k != pong.InboundFlow() {
		t.Errorf("ping: out %+v, reply %+v", k, pong.InboundFlow())
	}
	for name, pkt := range map[string][]byte{
		"RST":        pt.IP(self4, peer4, ProtoTCP, pt.TCP(1, 2, TCPRST, "")),
		"echo reply": pt.IP(self4, peer4, ProtoICMP, pt.ICMP(0, 7, nil)),
	} {
		p, _ := Parse(pkt)
		if k, ok := p.OutboundFlow(false); ok {
			t.Errorf("%s opens flow %+v", name, k)
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
		{peer4, self4, TCPSYN, "", 0, 1001, TCPRST | TCPACK},
		{peer6, self6, TCPSYN, "", 0, 1001, TCPRST | TCPACK},
		{peer4, self4, TCPSYN | TCPFIN, "ab", 0, 1004, TCPRST | TCPACK},
		{peer4, self4, TCPACK | TCPFIN, "abc", 2000, 0, TCPRST},
	} {
		in := pt.IP(c.src, c.dst, ProtoTCP, pt.TCP(50000, 23, c.flags, c.payload))
		p, _ := Parse(in)
		out := TCPReset(&p, in)
		r, ok := Parse(out)
		if !ok || r.Src != c.dst || r.Dst != c.src || r.SPort != 23 || r.DPort != 50000 || r.TCPFlags != c.rflags {
			t.Fatalf("reset %+v", r)
		}
		if seq, ack := binary.BigEndian.Uint32(r.Transport[4:]), binary.BigEndian.Uint32(r.Transport[8:]); seq != c.seq || ack != c.ack {
			t.Errorf("seq %d ack %d, want %d %d", seq, ack, c.seq, c.ack)
		}
		if !checksumsVerify(out, &r) {
			t.Error("bad checksum")
		}
		if TCPReset(&r, out) != nil {
			t.Error("answered a RST with a RST")
		}
	}
	for name, pkt := range map[string][]byte{
		"UDP":          pt.IP(peer4, self4, ProtoUDP, pt.UDP(1, 2)),
		"cut TCP":      pt.IP(peer4, self4, ProtoTCP, pt.TCP(1, 2, TCPSYN, "")[:16]),
		"to multicast": pt.IP(peer4, netip.MustParseAddr("224.0.0.1"), ProtoTCP, pt.TCP(1, 2, TCPSYN, "")),
		"bad data offset": func() []byte {
			s := pt.TCP(1, 2, TCPSYN, "")
			s[12] = 15 << 4
			return pt.IP(peer4, self4, ProtoTCP, s)
		}(),
	} {
		p, _ := Parse(pkt)
		if TCPReset(&p, pkt) != nil {
			t.Errorf("%s answered with a RST", name)
		}
	}
}

func TestUDPReply(t *testing.T) {
	for _, c := range []struct {
		src, dst netip.Addr
		payload  string
	}{{peer4, self4, "answer"}, {peer6, self6, "odd"}, {peer4, self4, ""}} {
		in := pt.IP(c.src, c.dst, ProtoUDP, pt.UDP(40000, 53))
		p, _ := Parse(in)
		out := UDPReply(&p, []byte(c.payload))
		r, ok := Parse(out)
		if !ok || r.Src != c.dst || r.Dst != c.src || r.SPort != 53 || r.DPort != 40000 || string(r.Transport[8:]) != c.payload ||
			int(binary.BigEndian.Uint16(r.Transport[4:])) != 8+len(c.payload) {
			t.Fatalf("reply %+v", r)
		}
		if !checksumsVerify(out, &r) {
			t.Errorf("bad checksum from %v", c.dst)
		}
	}
	for name, pkt := range map[string][]byte{
		"TCP":      pt.IP(peer4, self4, ProtoTCP, pt.TCP(1, 2, TCPSYN, "")),
		"fragment": func() []byte { b := pt.IP(peer4, self4, ProtoUDP, pt.UDP(1, 2)); b[7] = 1; return b }(),
	} {
		p, _ := Parse(pkt)
		if UDPReply(&p, []byte("x")) != nil {
			t.Errorf("%s answered", name)
		}
	}
}

// checksumsVerify reports whether a TCP segment's or UDP datagram's checksums (IPv4 header, TCP or UDP with the
// pseudo-header) verify: the sum over the covered bytes is all ones.
func checksumsVerify(pkt []byte, p *Packet) bool {
	var pseudo []byte
	n := len(p.Transport)
	if p.Src.Is4() {
		if Checksum(0, pkt[:20]) != 0xffff {
			return false
		}
		pseudo = append(append(p.Src.AsSlice(), p.Dst.AsSlice()...), 0, p.Proto, byte(n>>8), byte(n))
	} else {
		pseudo = append(append(p.Src.AsSlice(), p.Dst.AsSlice()...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, p.Proto)
	}
	return Checksum(Checksum(0, pseudo), p.Transport) == 0xffff
}

func TestChecksum(t *testing.T) {
	// RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2.
	if got := Checksum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != 0xddf2 {
		t.Errorf("sum %04x, want ddf2", got)
	}
	// An odd length pads with a zero byte; sums compose.
	if Checksum(Checksum(0, []byte{1, 2}), []byte{3}) != Checksum(0, []byte{1, 2, 3, 0}) {
		t.Error("odd length or composition wrong")
	}
}

func TestFlowTableBounded(t *testing.T) {
	ft := NewFlowTable(100)
	for i := range 1000 {
		ft.Track(FlowKey{Proto: ProtoUDP, Local: self4, Remote: peer4, LPort: uint16(i), RPort: 53}, 1)
	}
	if ft.Len() > 100 {
		t.Errorf("table grew to %d", ft.Len())
	}
}

// TestFlowTableExpiry runs on synctest's fake clock: each protocol's flows live for their idle time
// after their last use, and a lookup refreshes them.
func TestFlowTableExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := NewFlowTable(100)
		icmp := FlowKey{Proto: ProtoICMP, Local: self4, Remote: peer4, LPort: 1}
		udp := FlowKey{Proto: ProtoUDP, Local: self4, Remote: peer4, LPort: 1, RPort: 53}
		tcp := FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer4, LPort: 1, RPort: 80}
		ft.Track(icmp, 2)
		ft.Track(udp, 1)
		ft.Track(tcp, 1)
		if o, ok := ft.Lookup(icmp); !ok || o != 2 {
			t.Fatal("fresh flow not found")
		}
		time.Sleep(IdleICMP - time.Second)
		if _, ok := ft.Lookup(icmp); !ok { // refreshed
			t.Error("ICMP flow expired early")
		}
		time.Sleep(IdleICMP + time.Second)
		if _, ok := ft.Lookup(icmp); ok {
			t.Error("idle ICMP flow not expired")
		}
		time.Sleep(IdleUDP - IdleICMP*2 + time.Second)
		if _, ok := ft.Lookup(udp); ok {
			t.Error("idle UDP flow not expired")
		}
		if _, ok := ft.Lookup(tcp); !ok {
			t.Error("TCP flow expired after minutes")
		}
		time.Sleep(IdleTCP + time.Second)
		ft.Track(FlowKey{Proto: ProtoUDP, LPort: 9}, 1) // a new flow sweeps the expired ones
		if ft.Len() != 1 {
			t.Errorf("%d flows after the sweep, want 1", ft.Len())
		}
	})
}

// TestFlowTableClosed: a TCP flow that saw a FIN or RST is forgotten IdleTCPClosed after its last
// packet; a SYN on the same addresses and ports opens it afresh, for IdleTCP.
func TestFlowTableClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := NewFlowTable(100)
		closed := FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer4, LPort: 1, RPort: 80}
		reset := FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer4, LPort: 2, RPort: 80}
		reused := FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer4, LPort: 3, RPort: 80}
		open := FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer4, LPort: 4, RPort: 80}
		for _, k := range []FlowKey{closed, reset, reused, open} {
			ft.Track(k, 1)
		}
		ft.TCPSegment(closed, TCPFIN|TCPACK)
		ft.TCPSegment(reset, TCPRST)
		ft.TCPSegment(reused, TCPFIN|TCPACK)
		ft.TCPSegment(reused, TCPSYN)
		ft.TCPSegment(FlowKey{Proto: ProtoTCP, LPort: 9}, TCPFIN) // not tracked: nothing happens
		ft.Track(closed, 1)                                       // a later packet keeps it closed
		time.Sleep(IdleTCPClosed + time.Second)
		for k, want := range map[FlowKey]bool{closed: false, reset: false, reused: true, open: true} {
			if _, ok := ft.Lookup(k); ok != want {
				t.Errorf("flow to port %d found %v after %v, want %v", k.LPort, ok, IdleTCPClosed+time.Second, want)
			}
		}
		if ft.Len() != 2 {
			t.Errorf("%d flows, want 2", ft.Len())
		}
	})
}

// TestFlowTablePerRemote: one remote address that opens flow after flow replaces its own oldest
// flows once it holds its share of the table; the flows of others stay.
func TestFlowTablePerRemote(t *testing.T) {
	ft := NewFlowTable(800) // a share of 100
	for i := range 50 {
		ft.Track(FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer6, LPort: 22, RPort: uint16(1000 + i)}, 1)
	}
	attacker := netip.MustParseAddr("100.64.0.66")
	for i := range 20000 {
		k := FlowKey{Proto: ProtoTCP, Local: self4, Remote: attacker, LPort: 22, RPort: uint16(i)}
		ft.Track(k, 1)
		if i == 19999 {
			if _, ok := ft.Lookup(k); !ok {
				t.Error("the remote's newest flow is not tracked")
			}
		}
	}
	for i := range 50 {
		if _, ok := ft.Lookup(FlowKey{Proto: ProtoTCP, Local: self4, Remote: peer6, LPort: 22, RPort: uint16(1000 + i)}); !ok {
			t.Fatalf("flow %d of another remote was evicted", i)
		}
	}
	if n := ft.Len(); n != 150 {
		t.Errorf("%d flows, want 150: 50 and the other remote's share", n)
	}
}

func TestParseAllocs(t *testing.T) {
	pkt := pt.IP(peer6, self6, ProtoTCP, pt.TCP(1, 22, TCPSYN, ""))
	if a := testing.AllocsPerRun(100, func() { Parse(pkt); Addrs(pkt) }); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
}

func TestRaiseMSS(t *testing.T) {
	// syn is a checksummed SYN from peer to self with the given options (a multiple of 4 bytes).
	syn := func(src, dst netip.Addr, flags uint8, opts ...byte) []byte {
		seg := append(pt.TCP(50000, 80, flags, ""), opts...)
		seg[12] = byte(len(seg)/4) << 4
		return reverse(&Packet{Src: dst, Dst: src}, ProtoTCP, seg, 16)
	}
	mss := func(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint16 // the MSS afterwards; 0: unchanged
	}{
		{"IPv4 SYN", syn(peer4, self4, TCPSYN, append(mss(1240), 1, 3, 3, 7)...), 65000},
		{"IPv6 SYN-ACK after a no-op pair", syn(peer6, self6, TCPSYN|TCPACK, append([]byte{1, 1}, append(mss(1220), 0, 0, 0, 0)...)...), 65000},
		{"MSS already larger", syn(peer4, self4, TCPSYN, mss(65400)...), 0},
		{"MSS at an odd offset", syn(peer4, self4, TCPSYN, append([]byte{1}, append(mss(1240), 0, 0, 0)...)...), 0},
		{"no MSS", syn(peer4, self4, TCPSYN, 1, 1, 1, 0), 0},
		{"ACK", syn(peer4, self4, TCPACK, mss(1240)...), 0},
		{"option running past the header", syn(peer4, self4, TCPSYN, 1, 1, 8, 9), 0},
		{"zero-length option", syn(peer4, self4, TCPSYN, 3, 0, 2, 4, 4, 0xd8, 0, 0), 0},
	} {
		before := bytes.Clone(c.pkt)
		p, ok := Parse(c.pkt)
		if !ok {
			t.Fatalf("%s: not parsed", c.name)
		}
		changed := RaiseMSS(&p, 65000)
		if changed != (c.want != 0) {
			t.Errorf("%s: changed %v", c.name, changed)
		}
		if !changed {
			if !bytes.Equal(c.pkt, before) {
				t.Errorf("%s: changed the packet but said not", c.name)
			}
			continue
		}
		if !checksumsVerify(c.pkt, &p) {
			t.Errorf("%s: bad checksum after the change", c.name)
		}
		if i := bytes.Index(p.Transport[20:], []byte{2, 4}); i < 0 || binary.BigEndian.Uint16(p.Transport[20+i+2:]) != c.want {
			t.Errorf("%s: options now %x", c.name, p.Transport[20:])
		}
	}
}

// TestPureACK: bare TCP acknowledgements over IPv4 and IPv6, with and without options, and nothing
// else: no payload, no other flag, not a fragment, not behind an IPv6 extension header, not cut short.
func TestPureACK(t *testing.T) {
	withOptions := pt.TCP(5000, 22, TCPACK, "")
	withOptions[12] = 8 << 4 // 32-byte header: 12 bytes of options (timestamps)
	withOptions = append(withOptions, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2)
	fragment := pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, ""))
	fragment[6] = 0x20 // more fragments
	later := pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, ""))
	later[7] = 1 // fragment offset 8
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"v4 ack", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, "")), true},
		{"v6 ack", pt.IP(peer6, self6, ProtoTCP, pt.TCP(5000, 22, TCPACK, "")), true},
		{"v4 ack with options", pt.IP(peer4, self4, ProtoTCP, withOptions), true},
		{"v6 ack with options", pt.IP(peer6, self6, ProtoTCP, withOptions), true},
		{"ack with data", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, "x")), false},
		{"v6 ack with data", pt.IP(peer6, self6, ProtoTCP, pt.TCP(5000, 22, TCPACK, "x")), false},
		{"ack and push", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK|0x08, "")), false},
		{"syn ack", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPSYN|TCPACK, "")), false},
		{"fin ack", pt.IP(peer6, self6, ProtoTCP, pt.TCP(5000, 22, TCPFIN|TCPACK, "")), false},
		{"rst ack", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPRST|TCPACK, "")), false},
		{"udp", pt.IP(peer4, self4, ProtoUDP, append(pt.UDP(1, 2), make([]byte, 12)...)), false},
		{"first fragment", fragment, false},
		{"later fragment", later, false},
		{"v6 hop-by-hop", pt.IP(peer6, self6, 0, append([]byte{ProtoTCP, 0, 0, 0, 0, 0, 0, 0}, pt.TCP(1, 2, TCPACK, "")...)), false},
		{"cut short", pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, ""))[:39], false},
		{"options cut short", pt.IP(peer4, self4, ProtoTCP, withOptions)[:50], false},
		{"empty", nil, false},
	} {
		if got := PureACK(tc.pkt); got != tc.want {
			t.Errorf("%s: PureACK = %v, want %v", tc.name, got, tc.want)
		}
	}
}
