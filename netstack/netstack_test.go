package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/warren-net/warren/internal/testkit"
)

var (
	ipA4 = netip.MustParseAddr("100.64.0.1")
	ipB4 = netip.MustParseAddr("100.64.0.2")
	ipA6 = netip.MustParseAddr("fd7a:7761:7272::1")
	ipB6 = netip.MustParseAddr("fd7a:7761:7272::2")
)

// pfx gives addresses the overlay prefix lengths.
func pfx(addrs ...netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		bits := 10
		if a.Is6() {
			bits = 48
		}
		out[i] = netip.PrefixFrom(a, bits)
	}
	return out
}

// wire is one direction of a fake link: a bounded queue and one goroutine that injects into the
// destination stack. Output must not call the other stack's Inject synchronously (gVisor's write
// path would re-enter the other stack's receive path, and back), so packets are copied and queued,
// and dropped when the queue is full, as a real link would.
type wire struct {
	dst     atomic.Pointer[Stack]
	ch      chan []byte
	quit    chan struct{}
	done    chan struct{}
	maxSeen atomic.Int64 // largest packet seen
	drop    atomic.Bool  // drop everything (a dead peer)
	// held, if set, takes the packets instead of the destination (dropped when full), for a test
	// to hand over itself.
	held   atomic.Pointer[chan []byte]
	synced chan struct{} // see sync
}

// sync returns once every packet the wire took before the call has been injected.
func (w *wire) sync() {
	w.ch <- nil
	<-w.synced
}

func newWire() *wire {
	w := &wire{ch: make(chan []byte, 1024), quit: make(chan struct{}), done: make(chan struct{}), synced: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case p := <-w.ch:
				if p == nil { // from sync
					w.synced <- struct{}{}
					continue
				}
				if s := w.dst.Load(); s != nil {
					s.Inject(p)
				}
			case <-w.quit:
				return
			}
		}
	}()
	return w
}

func (w *wire) output(p []byte) {
	for {
		m := w.maxSeen.Load()
		if int64(len(p)) <= m || w.maxSeen.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	if w.drop.Load() {
		return
	}
	ch := w.ch
	if h := w.held.Load(); h != nil {
		ch = *h
	}
	select {
	case ch <- bytes.Clone(p):
	default: // full: drop
	}
}

// stop ends the wire's goroutine. Output stays safe to call afterwards (the channel is never closed).
func (w *wire) stop() {
	close(w.quit)
	<-w.done
}

// pairConfig adjusts the configs of the two stacks of a pair.
type pairConfig struct {
	a, b    Config
	exposed []uint16 // TCP ports B exposes
}

// newPair builds stacks A and B joined by two wires. Close order on cleanup: stacks, then wires.
func newPair(tb testing.TB, pc pairConfig) (a, b *Stack, ab, ba *wire) {
	tb.Helper()
	ab, ba = newWire(), newWire()
	if pc.a.Addrs == nil {
		pc.a.Addrs = pfx(ipA4, ipA6)
	}
	if pc.b.Addrs == nil {
		pc.b.Addrs = pfx(ipB4, ipB6)
	}
	pc.a.Output, pc.b.Output = ab.output, ba.output
	if pc.b.Exposed == nil {
		pc.b.Exposed = func(proto string, port uint16) bool {
			for _, p := range pc.exposed {
				if proto == "tcp" && p == port {
					return true
				}
			}
			return false
		}
	}
	var err error
	if a, err = New(pc.a); err != nil {
		tb.Fatal(err)
	}
	if b, err = New(pc.b); err != nil {
		a.Close()
		tb.Fatal(err)
	}
	ab.dst.Store(b)
	ba.dst.Store(a)
	tb.Cleanup(func() {
		a.Close()
		b.Close()
		ab.stop()
		ba.stop()
	})
	return a, b, ab, ba
}

// pair builds stacks A and B with both address families; B exposes the given TCP ports.
func pair(t *testing.T, exposed ...uint16) (a, b *Stack, ab, ba *wire) {
	t.Helper()
	return newPair(t, pairConfig{exposed: exposed})
}

// serve runs handle for every connection to a 127.0.0.1 listener and returns its port.
func serve(tb testing.TB, handle func(net.Conn)) uint16 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// echoService listens on 127.0.0.1 and echoes.
func echoService(t *testing.T) uint16 {
	return serve(t, func(c net.Conn) { io.Copy(c, c) })
}

func dial(t testing.TB, s *Stack, dst netip.Addr, port uint16) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	return c
}

func randBytes(n int) ([]byte, [32]byte) {
	b := make([]byte, n)
	rand.Read(b)
	return b, sha256.Sum256(b)
}

// exchange sends out on c and half-closes, while reading c to EOF; it returns the hash of what it read.
func exchange(c net.Conn, out []byte) ([32]byte, int64, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(out)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // a safety net: under -race on a busy machine 8 MiB can take tens of seconds
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err2 := <-werr; err == nil {
		err = err2
	}
	return [32]byte(h.Sum(nil)), n, err
}

// TestBulkBothDirections moves 8 MiB each way at once through both stacks and the forwarder to a
// host service, over IPv4 and IPv6, and checks the bytes, the half-close and the MTU.
func TestBulkBothDirections(t *testing.T) {
	const size = 8 << 20
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	fromService, serviceSum := randBytes(size)
	got := make(chan result, 1)
	port := serve(t, func(c net.Conn) {
		sum, n, err := exchange(c, fromService)
		got <- result{sum, n, err}
	})
	a, b, ab, ba := pair(t, port)
	for _, dst := range []netip.Addr{ipB4, ipB6} {
		toService, clientSum := randBytes(size)
		c := dial(t, a, dst, port)
		sum, n, err := exchange(c, toService)
		c.Close()
		if err != nil || n != size || sum != serviceSum {
			t.Fatalf("%v: service→client: %d bytes, err %v, hash ok %v", dst, n, err, sum == serviceSum)
		}
		r := <-got
		if r.err != nil || r.n != size || r.sum != clientSum {
			t.Fatalf("%v: client→service: %d bytes, err %v, hash ok %v", dst, r.n, r.err, r.sum == clientSum)
		}
	}
	if m := max(ab.maxSeen.Load(), ba.maxSeen.Load()); m > DefaultMTU {
		t.Errorf("a packet of %d bytes exceeded the %d-byte MTU", m, DefaultMTU)
	}
	st := b.Stats()
	if st.ForwardsAccepted != 2 || st.PacketsIn == 0 || st.PacketsOut == 0 || st.DroppedOversize != 0 {
		t.Errorf("B stats: %+v", st)
	}
	if st := a.Stats(); st.PacketsOut == 0 || st.BytesOut < 2*size || st.DroppedMalformed != 0 {
		t.Errorf("A stats: %+v", st)
	}
}

// TestMTU1200 runs IPv4-only stacks on a 1200-byte link: no packet may exceed it, and full-sized
// segments show that the MSS follows the MTU.
func TestMTU1200(t *testing.T) {
	const mtu = 1200
	port := serve(t, func(c net.Conn) { io.Copy(c, c) })
	a, _, ab, ba := newPair(t, pairConfig{
		a:       Config{Addrs: pfx(ipA4), MTU: mtu},
		b:       Config{Addrs: pfx(ipB4), MTU: mtu},
		exposed: []uint16{port},
	})
	out, want := randBytes(2 << 20)
	c := dial(t, a, ipB4, port)
	defer c.Close()
	sum, n, err := exchange(c, out)
	if err != nil || sum != want {
		t.Fatalf("echo: %d bytes, err %v", n, err)
	}
	for name, w := range map[string]*wire{"A→B": ab, "B→A": ba} {
		if m := w.maxSeen.Load(); m > mtu || m < mtu-60 {
			t.Errorf("%s: largest packet %d bytes, want close to but not over %d", name, m, mtu)
		}
	}
}

func TestMTUValidation(t *testing.T) {
	out := func([]byte) {}
	for _, tc := range []struct {
		addrs []netip.Prefix
		mtu   int
		ok    bool
	}{
		{pfx(ipA4, ipA6), 0, true},
		{pfx(ipA4, ipA6), 1280, true},
		{pfx(ipA4, ipA6), 1200, false}, // gVisor cannot send IPv6 below 1280
		{pfx(ipA4), 1200, true},
		{pfx(ipA4), 500, false},
		{pfx(ipA4), 70000, false},
	} {
		s, err := New(Config{Addrs: tc.addrs, MTU: tc.mtu, Output: out})
		if (err == nil) != tc.ok {
			t.Errorf("%v MTU %d: err %v", tc.addrs, tc.mtu, err)
		}
		if s != nil {
			s.Close()
		}
	}
	if _, err := New(Config{Output: out}); err == nil {
		t.Error("no addresses accepted")
	}
	if _, err := New(Config{Addrs: pfx(ipA4)}); err == nil {
		t.Error("no Output accepted")
	}
}

// TestUnexposedPortIsRefused: a SYN to a port that is not exposed, or exposed with nothing
// listening on the host, is reset at once and the dial fails with "connection refused".
func TestUnexposedPortIsRefused(t *testing.T) {
	listening := echoService(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	a, b, _, _ := pair(t, down) // exposed: only the port nobody listens on
	for _, port := range []uint16{listening, down} {
		for _, dst := range []netip.Addr{ipB4, ipB6} {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, port).String())
			cancel()
			if err == nil || !strings.Contains(err.Error(), "connection refused") ||
				!errors.Is(err, ErrConnectionRefused) || !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial %v:%d: %v", dst, port, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refusal took %v", d)
			}
		}
	}
	if n := b.Stats().ForwardsRefused; n != 4 {
		t.Errorf("refused counter %d, want 4", n)
	}
}

func TestDialErrors(t *testing.T) {
	a, _, ab, _ := newPair(t, pairConfig{a: Config{
		Addrs:  pfx(ipA4, ipA6),
		Routes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")},
	}})
	ctx := context.Background()
	for _, addr := range []string{"10.1.2.3:80", "[2001:db8::1]:80"} {
		_, err := a.DialContext(ctx, "tcp", addr)
		if err == nil || !strings.Contains(err.Error(), "host unreachable") || !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial outside the routes %s: %v", addr, err)
		}
	}
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "b.warren:80"}, {"tcp", "100.64.0.2"}, {"tcp4", "[fd7a:7761:7272::2]:80"},
		{"tcp6", "100.64.0.2:80"}, {"sctp", "100.64.0.2:80"},
	} {
		if _, err := a.DialContext(ctx, tc.network, tc.addr); err == nil {
			t.Errorf("dial %s %s: no error", tc.network, tc.addr)
		}
	}
	// A peer that never answers: the dial ends promptly when ctx does.
	ab.drop.Store(true)
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := a.DialContext(tctx, "tcp", netip.AddrPortFrom(ipB4, 80).String())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial to a dead peer: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second { // a SYN retry would take far longer; 10 s is for a loaded machine
		t.Errorf("cancelled dial took %v", d)
	}
}

func TestUDPDial(t *testing.T) {
	a, b, _, _ := pair(t)
	pc, err := b.ListenUDP("udp6")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	c, err := a.DialContext(context.Background(), "udp", fmt.Sprintf("[%v]:%d", ipB6, port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.(*net.UDPAddr).AddrPort().Addr() != ipA6 {
		t.Fatalf("got %q from %v: %v", buf[:n], from, err)
	}
}

// TestEchoAnswered: the stack answers an ICMP echo request to its own address by itself.
func TestEchoAnswered(t *testing.T) {
	got := make(chan []byte, 1)
	s, err := New(Config{Addrs: pfx(ipB4), Output: func(p []byte) {
		select {
		case got <- bytes.Clone(p):
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Inject(echoRequest(ipA4, ipB4))
	select {
	case reply := <-got:
		h := header.IPv4(reply)
		if h.Protocol() != uint8(header.ICMPv4ProtocolNumber) || header.ICMPv4(h.Payload()).Type() != header.ICMPv4EchoReply {
			t.Fatalf("not an echo reply: %x", reply)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no echo reply")
	}
}

func TestInjectDropsMalformed(t *testing.T) {
	s, err := New(Config{Addrs: pfx(ipB4, ipB6), Output: func([]byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{nil, {}, {0x00, 1, 2}, {0x45}, make([]byte, maxPacket+1), {0x60, 0, 0}} {
		s.Inject(p)
	}
	if n := s.Stats().DroppedMalformed; n < 4 {
		t.Errorf("dropped malformed %d, want at least 4", n)
	}
	s.Close()
	s.Inject(echoRequest(ipA4, ipB4))
	if n := s.Stats().DroppedClosed; n != 1 {
		t.Errorf("dropped after close %d, want 1", n)
	}
}

// echoRequest builds an ICMPv4 echo request.
func echoRequest(src, dst netip.Addr) []byte {
	const icmpLen = header.ICMPv4MinimumSize + 8
	pkt := make([]byte, header.IPv4MinimumSize+icmpLen)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(1)
	icmp.SetSequence(1)
	copy(icmp.Payload(), "warren!!")
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

// ipPacket builds an IPv4 or IPv6 packet around a transport header of the given protocol and
// fills in the transport checksum.
func ipPacket(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, transport []byte) []byte {
	s, d := tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice())
	var pkt []byte
	if src.Is4() {
		pkt = make([]byte, header.IPv4MinimumSize+len(transport))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(proto), SrcAddr: s, DstAddr: d})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(ip.Payload(), transport)
	} else {
		pkt = make([]byte, header.IPv6MinimumSize+len(transport))
		header.IPv6(pkt).Encode(&header.IPv6Fields{PayloadLength: uint16(len(transport)), TransportProtocol: proto,
			HopLimit: 64, SrcAddr: s, DstAddr: d})
		copy(pkt[header.IPv6MinimumSize:], transport)
	}
	t := pkt[len(pkt)-len(transport):]
	xsum := header.PseudoHeaderChecksum(proto, s, d, uint16(len(t)))
	switch proto {
	case header.TCPProtocolNumber:
		header.TCP(t).SetChecksum(^checksum.Checksum(t, xsum))
	case header.UDPProtocolNumber:
		header.UDP(t).SetChecksum(^checksum.Checksum(t, xsum))
	}
	return pkt
}

func tcpSYN(src, dst netip.Addr, port uint16) []byte { return tcpSYNFrom(src, dst, 40000, port) }

// tcpSegment builds a TCP segment (no options) in an IP packet, checksummed.
func tcpSegment(src, dst netip.Addr, srcPort, port uint16, seq, ack uint32, flags header.TCPFlags, payload []byte) []byte {
	t := make([]byte, header.TCPMinimumSize+len(payload))
	header.TCP(t).Encode(&header.TCPFields{SrcPort: srcPort, DstPort: port, SeqNum: seq, AckNum: ack,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	copy(t[header.TCPMinimumSize:], payload)
	return ipPacket(src, dst, header.TCPProtocolNumber, t)
}

func udpPacket(src, dst netip.Addr, port uint16, payload string) []byte {
	u := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(u).Encode(&header.UDPFields{SrcPort: 40000, DstPort: port, Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	return ipPacket(src, dst, header.UDPProtocolNumber, u)
}

// TestSYNToUnexposedPortGetsRST checks the fuzz seeds are valid: a hand-built SYN gets a RST.
func TestSYNToUnexposedPortGetsRST(t *testing.T) {
	for _, src := range []netip.Addr{ipA4, ipA6} {
		dst := ipB4
		if src.Is6() {
			dst = ipB6
		}
		got := make(chan []byte, 4)
		s, err := New(Config{Addrs: pfx(ipB4, ipB6), Output: func(p []byte) {
			select {
			case got <- bytes.Clone(p):
			default:
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		s.Inject(tcpSYN(src, dst, 22))
		select {
		case p := <-got:
			var tcp header.TCP
			if src.Is4() {
				tcp = header.TCP(header.IPv4(p).Payload())
			} else {
				tcp = header.TCP(header.IPv6(p).Payload())
			}
			if tcp.Flags()&header.TCPFlagRst == 0 || tcp.SourcePort() != 22 {
				t.Errorf("%v: not a RST from port 22: %v", src, tcp.Flags())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%v: no answer to a SYN", src)
		}
		s.Close()
	}
}

// leakCheck fails the test if goroutines started after it was called are still running when the
// test ends (testkit.VerifyNone, which waits for goroutines on their way out).
func leakCheck(t *testing.T) { t.Cleanup(testkit.VerifyNone(t)) }

// TestCloseLeavesNoGoroutines closes stacks with a forwarded connection open (its splice and the
// host side must end) and checks Close is idempotent and the stack refuses work afterwards.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	leakCheck(t) // registered first, so it runs after the other cleanups
	port := echoService(t)
	udpPort := udpEcho(t)
	a, b, _, _ := pair(t, port)
	if err := b.ExposeUDP(udpPort); err != nil {
		t.Fatal(err)
	}
	c := dial(t, a, ipB4, port)
	defer c.Close()
	c.Write([]byte("hi"))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	if n := b.Stats().ForwardsActive; n != 1 {
		t.Errorf("active forwards %d, want 1", n)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.Stats().ForwardsActive; n != 0 {
		t.Errorf("active forwards after Close %d, want 0", n)
	}
	if _, err := b.DialContext(context.Background(), "tcp", netip.AddrPortFrom(ipA4, 1).String()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after Close: %v", err)
	}
	if _, err := b.ListenUDP("udp4"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenUDP after Close: %v", err)
	}
	if _, err := b.Ping(context.Background(), ipA4, 1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
	if err := b.ExposeUDP(udpPort + 1); err == nil {
		t.Error("ExposeUDP after Close succeeded")
	}
	a.Close()
	a.Close()
}

// TestCloseDuringHandshake: a forwarded SYN whose handshake never completes (the remote vanished
// after sending it) does not hold Close for gVisor's ~2 min of SYN-ACK retries.
func TestCloseDuringHandshake(t *testing.T) {
	leakCheck(t)
	dialed := make(chan struct{}, 1)
	port := serve(t, func(c net.Conn) {
		dialed <- struct{}{}
		io.Copy(io.Discard, c)
	})
	s, err := New(Config{Addrs: pfx(ipB4, ipB6), Output: func([]byte) {}, // the SYN-ACK goes nowhere
		Exposed: func(_ string, p uint16) bool { return p == port }})
	if err != nil {
		t.Fatal(err)
	}
	s.Inject(tcpSYN(ipA4, ipB4, port))
	select {
	case <-dialed: // the forwarder dialed the host and is now waiting for the handshake
	case <-time.After(5 * time.Second):
		t.Fatal("the SYN was not forwarded")
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a handshake in progress", d)
	}
}

// FuzzInject feeds arbitrary bytes to Inject, and to Gather and Flush.
func FuzzInject(f *testing.F) {
	f.Add(tcpSYN(ipA4, ipB4, 22))
	f.Add(tcpSYN(ipA6, ipB6, 80))
	f.Add(udpPacket(ipA4, ipB4, 53, "hello"))
	f.Add(udpPacket(ipA6, ipB6, 53, "hello"))
	f.Add(echoRequest(ipA4, ipB4))
	f.Add([]byte{0x45})
	for _, src := range []netip.Addr{ipA4, ipA6} {
		dst := ipB4
		if src.Is6() {
			dst = ipB6
		}
		f.Add(tcpSegment(src, dst, 40000, 80, 1, 1, header.TCPFlagAck, make([]byte, 100)))
	}
	s, err := New(Config{Addrs: pfx(ipB4, ipB6), Output: func([]byte) {}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s.Inject(pkt)
		s.Gather(pkt) // the coalescing engine's parser too, and a second copy to merge or flush
		s.Gather(pkt)
		s.Flush()
	})
}

// BenchmarkBulkTCP moves data one way from A through B's forwarder to a host sink; each
// iteration is 1 MiB, counted only once the sink has it.
func BenchmarkBulkTCP(b *testing.B) {
	received := make(chan int64, 1)
	port := serve(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		received <- n
	})
	sa, _, _, _ := newPair(b, pairConfig{exposed: []uint16{port}})
	c := dial(b, sa, ipB4, port)
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	if n := <-received; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("sink got %d bytes, want %d", n, b.N*len(buf))
	}
}

func tcpSYNFrom(src, dst netip.Addr, srcPort, port uint16) []byte {
	return tcpSegment(src, dst, srcPort, port, 1, 0, header.TCPFlagSyn, nil)
}

// TestHandshakesPerAddress: a remote that leaves its handshakes half-open holds at most its share
// of the forwarder; its next SYN is reset, and another remote still gets through.
func TestHandshakesPerAddress(t *testing.T) {
	dialed := make(chan struct{}, maxInFlightForwards)
	port := serve(t, func(c net.Conn) {
		dialed <- struct{}{}
		io.Copy(io.Discard, c)
	})
	rsts := make(chan uint16, 64) // destination ports of RSTs the stack sends
	s, err := New(Config{Addrs: pfx(ipB4, ipB6), Exposed: func(_ string, p uint16) bool { return p == port },
		Output: func(p []byte) { // SYN-ACKs go nowhere: every handshake stays half-open
			if tcp := header.TCP(header.IPv4(p).Payload()); tcp.Flags()&header.TCPFlagRst != 0 {
				select {
				case rsts <- tcp.DestinationPort():
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range maxHandshakesFrom {
		s.Inject(tcpSYNFrom(ipA4, ipB4, uint16(20000+i), port))
	}
	for i := range maxHandshakesFrom {
		select {
		case <-dialed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d SYNs forwarded", i, maxHandshakesFrom)
		}
	}
	s.Inject(tcpSYNFrom(ipA4, ipB4, 30000, port))
	select {
	case p := <-rsts:
		if p != 30000 {
			t.Fatalf("RST to port %d, want 30000", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a SYN beyond the address's share was not reset")
	}
	other := netip.MustParseAddr("100.64.0.9")
	s.Inject(tcpSYNFrom(other, ipB4, 30001, port))
	select {
	case <-dialed:
	case <-time.After(5 * time.Second):
		t.Fatal("another remote's SYN was not forwarded")
	}
}
