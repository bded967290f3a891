package node

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
)

// Packets that hide a connection request from a filter that looks at one packet at a time, as a
// reviewer built them, and the checks that catch them: filterACL where it can read the packet, the
// netstack's forwarders (stackAdmit) on what gVisor reassembled.

// pseudoHeader is the TCP/UDP checksum pseudo-header for n transport bytes.
func pseudoHeader(src, dst netip.Addr, proto uint8, n int) []byte {
	b := append(src.AsSlice(), dst.AsSlice()...)
	if src.Is4() {
		return append(b, 0, proto, byte(n>>8), byte(n))
	}
	return append(b, 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
}

// checkedSeg is a 20-byte TCP segment from port 40000 to dport with the given flags, checksummed
// for src → dst (gVisor's forwarder ignores segments with a bad checksum).
func checkedSeg(src, dst netip.Addr, dport uint16, flags uint8) []byte {
	t := tcpSeg(40000, dport, flags, "")
	binary.BigEndian.PutUint16(t[14:], 65535) // window
	binary.BigEndian.PutUint16(t[16:], ^packet.Checksum(packet.Checksum(0, pseudoHeader(src, dst, packet.ProtoTCP, len(t))), t))
	return t
}

// checkedDgram is a UDP datagram from port 40000 to dport, checksummed for src → dst.
func checkedDgram(src, dst netip.Addr, dport uint16, payload []byte) []byte {
	u := append(udpDgram(40000, dport), payload...)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	c := ^packet.Checksum(packet.Checksum(0, pseudoHeader(src, dst, packet.ProtoUDP, len(u))), u)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return u
}

// fragID numbers the datagrams fragments4 builds, so that their fragments never mix.
var fragID atomic.Uint32

// fragments4 cuts transport message t into IPv4 fragments of at most size bytes of t each (a
// multiple of 8), with valid header checksums.
func fragments4(src, dst netip.Addr, proto uint8, t []byte, size int) [][]byte {
	id := uint16(fragID.Add(1))
	var out [][]byte
	for off := 0; off < len(t); off += size {
		end := min(off+size, len(t))
		p := ipPacket(src, dst, proto, t[off:end])
		binary.BigEndian.PutUint16(p[4:], id)
		ff := uint16(off / 8)
		if end < len(t) {
			ff |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(p[6:], ff)
		binary.BigEndian.PutUint16(p[10:], ^packet.Checksum(0, p[:20]))
		out = append(out, p)
	}
	return out
}

// behindOptions puts transport message t behind n IPv6 Destination Options headers (PadN only).
func behindOptions(src, dst netip.Addr, proto uint8, n int, t []byte) []byte {
	var ext []byte
	for i := range n {
		next := byte(60)
		if i == n-1 {
			next = proto
		}
		ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0)
	}
	return ipPacket(src, dst, 60, append(ext, t...))
}

// stackHarness is aclNode's node with a netstack wired as Start wires it (Exposed, Admit, exposed
// UDP ports), so packets go through receive, filterACL, gVisor and the forwarders. Local dials are
// recorded and fail at once: an admitted connection is answered with a RST, as a refused one, and
// no handshake is left to wait for (a forwarded SYN whose handshake never completes holds
// Stack.Close for the ~127 s of gVisor's SYN-ACK retries).
type stackHarness struct {
	n     *Node
	st    *netstack.Stack
	dials atomic.Int32
	out   chan []byte // packets the stack sent
}

func newStackHarness(t *testing.T) (h *stackHarness, ci1, laptop, friend peer.Key) {
	n, ci1, _, laptop, friend := aclNode(t)
	h = &stackHarness{n: n, out: make(chan []byte, 64)}
	st, err := netstack.New(netstack.Config{
		Addrs: []netip.Prefix{netip.PrefixFrom(self4, 10), netip.PrefixFrom(self6, 48)},
		Output: func(pkt []byte) {
			select {
			case h.out <- append([]byte(nil), pkt...):
			default:
			}
		},
		Exposed: func(proto string, port uint16) bool { return n.exposed[Port{proto, port}] },
		Admit:   n.stackAdmit(self4, self6),
		DialLocal: func(context.Context, string, string) (net.Conn, error) {
			h.dials.Add(1)
			return nil, syscall.ECONNREFUSED
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.ExposeUDP(27015); err != nil {
		t.Fatal(err)
	}
	h.st = st
	n.stack.Store(st)
	return h, ci1, laptop, friend
}

// resetFor waits for the stack's RST to a connection request from port 40000.
func (h *stackHarness) resetFor(t *testing.T, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case pkt := <-h.out:
			if p, ok := packet.Parse(pkt); ok && p.Proto == packet.ProtoTCP && p.DPort == 40000 && p.TCPFlags&packet.TCPRST != 0 {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no RST from the stack", what)
		}
	}
}

// udpHandled waits until the UDP forwarder has dealt with one more datagram (refused it, or
// failed to dial the local port for it): ForwardsRefused goes past before.
func (h *stackHarness) udpHandled(t *testing.T, what string, before uint64) {
	t.Helper()
	waitFor(t, 5*time.Second, what+": the UDP forwarder handling the datagram", func() bool { return h.st.Stats().ForwardsRefused > before })
}

// TestACLStackRefusesHiddenConnections: packets injected straight into the netstack (as if
// filterACL had let them through) reach the forwarders, which refuse what the sender's rules do not
// allow — laptop may only ping — and forward what they do allow (ci may open tcp/22 and udp/27015;
// friend is not restricted). Refusals count as dropped_acl.
func TestACLStackRefusesHiddenConnections(t *testing.T) {
	h, _, _, _ := newStackHarness(t)
	ci4, laptop4, friend4 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.4"), netip.MustParseAddr("100.64.0.5")
	ci6, laptop6 := netip.MustParseAddr("fd7a:7761:7272::2"), netip.MustParseAddr("fd7a:7761:7272::4")
	nobody := netip.MustParseAddr("100.64.0.99") // owned by no peer (say, removed since)

	// A SYN whose first fragment ends after 8 TCP bytes, before the flags.
	tinyFirst := func(src netip.Addr) [][]byte {
		return fragments4(src, self4, packet.ProtoTCP, checkedSeg(src, self4, 22, packet.TCPSYN), 8)
	}
	// A SYN behind 9 Destination Options headers, more than packet.Parse walks.
	deepSYN := func(src netip.Addr) [][]byte {
		return [][]byte{behindOptions(src, self6, packet.ProtoTCP, 9, checkedSeg(src, self6, 22, packet.TCPSYN))}
	}
	// SYN+RST: not a SYN to a filter that wants SYN alone, a connection request to gVisor's forwarder.
	synRST := func(src netip.Addr) [][]byte {
		return [][]byte{ipv4Checked(src, self4, packet.ProtoTCP, checkedSeg(src, self4, 22, packet.TCPSYN|packet.TCPRST))}
	}
	// A UDP datagram larger than the overlay MTU, in fragments as gVisor sends it.
	bigDgram := func(src netip.Addr) [][]byte {
		return fragments4(src, self4, packet.ProtoUDP, checkedDgram(src, self4, 27015, make([]byte, 3000)), 1256)
	}
	for _, c := range []struct {
		name  string
		pkts  [][]byte
		udp   bool
		admit bool
	}{
		{"laptop: SYN with a tiny first fragment", tinyFirst(laptop4), false, false},
		{"ci: SYN with a tiny first fragment", tinyFirst(ci4), false, true},
		{"laptop: SYN behind 9 extension headers", deepSYN(laptop6), false, false},
		{"ci: SYN behind 9 extension headers", deepSYN(ci6), false, true},
		{"laptop: SYN+RST", synRST(laptop4), false, false},
		{"friend: SYN+RST", synRST(friend4), false, true},
		{"no peer's address: SYN", synRST(nobody), false, false},
		{"laptop: fragmented UDP datagram", bigDgram(laptop4), true, false},
		{"ci: fragmented UDP datagram", bigDgram(ci4), true, true},
		{"laptop: UDP behind 9 extension headers", [][]byte{behindOptions(laptop6, self6, packet.ProtoUDP, 9,
			checkedDgram(laptop6, self6, 27015, []byte("hi")))}, true, false},
	} {
		dials, acl, refused := h.dials.Load(), h.n.drops.acl.Load(), h.st.Stats().ForwardsRefused
		for _, p := range c.pkts {
			h.st.Inject(p)
		}
		if c.udp {
			h.udpHandled(t, c.name, refused)
		} else {
			h.resetFor(t, c.name)
		}
		if dialed := h.dials.Load() > dials; dialed != c.admit {
			t.Errorf("%s: local port dialed=%v, want %v", c.name, dialed, c.admit)
		}
		if counted := h.n.drops.acl.Load() - acl; counted != map[bool]uint64{false: 1, true: 0}[c.admit] {
			t.Errorf("%s: %d refusals counted as dropped_acl", c.name, counted)
		}
	}

	// The node's own connections to its exposed port, looping inside the stack, are no peer's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dials, acl := h.dials.Load(), h.n.drops.acl.Load()
	if _, err := h.st.DialContext(ctx, "tcp", netip.AddrPortFrom(self4, 22).String()); !errors.Is(err, netstack.ErrConnectionRefused) {
		t.Errorf("dial own exposed port: %v, want refused by the failing local dial", err)
	}
	if h.dials.Load() == dials || h.n.drops.acl.Load() != acl {
		t.Error("the node's own connection to itself was judged by the access rules")
	}
}

// ipv4Checked is ipPacket for IPv4 with a valid header checksum.
func ipv4Checked(src, dst netip.Addr, proto uint8, t []byte) []byte {
	return fragments4(src, dst, proto, t, 1<<16)[0]
}

// TestACLReceiveHiddenConnections: the same packets through receive. filterACL refuses what it
// cannot judge from a peer under rules (a first fragment cut before the TCP flags, even from a peer
// allowed the port; a packet it cannot parse) and treats SYN+RST as the connection request it is to gVisor; fragments it cannot
// judge pass, so allowed traffic still fragments: a UDP datagram over the MTU and a SYN in two
// fragments from ci reach the forwarders.
func TestACLReceiveHiddenConnections(t *testing.T) {
	h, ci1, laptop, friend := newStackHarness(t)
	ci4, laptop4, friend4 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.4"), netip.MustParseAddr("100.64.0.5")
	laptop6, friend6 := netip.MustParseAddr("fd7a:7761:7272::4"), netip.MustParseAddr("fd7a:7761:7272::5")

	frags := fragments4(laptop4, self4, packet.ProtoTCP, checkedSeg(laptop4, self4, 22, packet.TCPSYN), 8)
	for _, c := range []struct {
		name   string
		from   peer.Key
		pkt    []byte
		passed bool
	}{
		{"laptop: first fragment cut before the TCP flags", laptop, frags[0], false},
		{"laptop: its second fragment (no transport header)", laptop, frags[1], true},
		{"ci (allowed tcp/22): first fragment cut before the TCP flags", ci1,
			fragments4(ci4, self4, packet.ProtoTCP, checkedSeg(ci4, self4, 22, packet.TCPSYN), 8)[0], false},
		{"laptop: SYN behind 9 extension headers", laptop, behindOptions(laptop6, self6, packet.ProtoTCP, 9, checkedSeg(laptop6, self6, 22, packet.TCPSYN)), false},
		{"laptop: SYN+RST", laptop, ipv4Checked(laptop4, self4, packet.ProtoTCP, checkedSeg(laptop4, self4, 22, packet.TCPSYN|packet.TCPRST)), false},
		{"laptop: truncated UDP", laptop, ipPacket(laptop4, self4, packet.ProtoUDP, []byte{1, 2}), false},
		{"friend (no rules): SYN behind 9 extension headers", friend, behindOptions(friend6, self6, packet.ProtoTCP, 9, checkedSeg(friend6, self6, 22, packet.TCPSYN)), true},
		{"friend (no rules): SYN+RST", friend, ipv4Checked(friend4, self4, packet.ProtoTCP, checkedSeg(friend4, self4, 22, packet.TCPSYN|packet.TCPRST)), true},
	} {
		in, acl := h.st.Stats().PacketsIn, h.n.drops.acl.Load()
		h.n.receive(c.from, c.pkt)
		if passed := h.st.Stats().PacketsIn > in; passed != c.passed {
			t.Errorf("%s: reached the stack=%v, want %v", c.name, passed, c.passed)
		}
		if counted := h.n.drops.acl.Load() - acl; counted != map[bool]uint64{false: 1, true: 0}[c.passed] {
			t.Errorf("%s: %d refusals counted as dropped_acl", c.name, counted)
		}
		if c.passed && c.from == friend {
			h.resetFor(t, c.name) // and the forwarder dialed: checked below
		}
	}
	if h.dials.Load() != 2 {
		t.Errorf("%d local dials, want 2 (friend's)", h.dials.Load())
	}

	// Allowed traffic that fragments still flows (a first fragment that shows the flags).
	syn := fragments4(ci4, self4, packet.ProtoTCP, checkedSeg(ci4, self4, 22, packet.TCPSYN), 16)
	h.n.receive(ci1, syn[1]) // the later fragment first: it waits for the first in the reassembler
	dials := h.dials.Load()
	h.n.receive(ci1, syn[0])
	h.resetFor(t, "ci: SYN in two fragments")
	if h.dials.Load() == dials {
		t.Error("ci's fragmented SYN to tcp/22 was not forwarded")
	}
	refused, dials := h.st.Stats().ForwardsRefused, h.dials.Load()
	for _, p := range fragments4(ci4, self4, packet.ProtoUDP, checkedDgram(ci4, self4, 27015, make([]byte, 3000)), 1256) {
		h.n.receive(ci1, p)
	}
	h.udpHandled(t, "ci: UDP datagram over the MTU", refused)
	if h.dials.Load() == dials {
		t.Error("ci's fragmented datagram to udp/27015 was not forwarded")
	}
}

// TestTUNRefusesHiddenConnections: in TUN mode the kernel reassembles, so tunVerdict's reading of
// single packets is all there is; the reviewer's packets never reach the device (receiveTUN drops
// what does not parse and what gets verdict 0).
func TestTUNRefusesHiddenConnections(t *testing.T) {
	n, b := testBridge()
	frags := fragments4(peer4, self4, packet.ProtoTCP, checkedSeg(peer4, self4, 22, packet.TCPSYN), 8)
	if p, ok := packet.Parse(frags[0]); !ok || b.verdict(&p, n.exposed, n.overlay) != 0 {
		t.Error("a SYN's first fragment cut before the flags reaches the device")
	}
	if _, ok := packet.Parse(behindOptions(peer6, self6, packet.ProtoTCP, 9, checkedSeg(peer6, self6, 22, packet.TCPSYN))); ok {
		t.Error("a SYN behind 9 extension headers parses (receiveTUN drops what does not)")
	}
	if p, ok := packet.Parse(ipv4Checked(peer4, self4, packet.ProtoTCP, checkedSeg(peer4, self4, 22, packet.TCPSYN|packet.TCPRST))); !ok || b.verdict(&p, n.exposed, n.overlay) != 0 {
		t.Error("SYN+RST reaches the device")
	}
}
