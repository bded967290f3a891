package netstack

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TestUDPConnDeadlinesAndClose: a read past its deadline fails with a timeout (and works again once
// the deadline is cleared), and Close wakes a reader blocked without one.
func TestUDPConnDeadlinesAndClose(t *testing.T) {
	a, b, _, _ := pair(t)
	pc, err := b.ListenUDP("udp4")
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*udpConn)
	buf := make([]byte, 64)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err = c.ReadFromUDPAddrPort(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	sender, err := a.ListenUDP("udp4")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	to := c.LocalAddr().(*net.UDPAddr).AddrPort()
	to = netip.AddrPortFrom(ipB4, to.Port())
	if _, err := sender.(*udpConn).WriteToUDPAddrPort([]byte("after"), to); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "after" || from.Addr() != ipA4 {
		t.Fatalf("read after clearing the deadline: %q from %v, %v", buf[:n], from, err)
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFromUDPAddrPort(buf)
		done <- err
	}()
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not wake the blocked reader")
	}
	if _, err := c.WriteToUDPAddrPort([]byte("x"), to); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}

// udpSocket opens an unconnected IPv4 UDP socket on s: the stack's own (udpConn), or, with gonet,
// gVisor's gonet.UDPConn over the same kind of endpoint, for comparison.
func udpSocket(tb testing.TB, s *Stack, gonetConn bool) net.PacketConn {
	tb.Helper()
	if !gonetConn {
		c, err := s.ListenUDP("udp4")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		return c
	}
	var wq waiter.Queue
	ep, terr := s.s.NewEndpoint(udp.ProtocolNumber, netProto(ipA4), &wq)
	if terr != nil {
		tb.Fatal(terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID}); terr != nil {
		tb.Fatal(terr)
	}
	c := gonet.NewUDPConn(&wq, ep)
	tb.Cleanup(func() { c.Close() })
	return c
}

// udpRoundTrip returns a function that sends a 64-byte datagram from A's socket to B's, which echoes
// it back, through the net.PacketConn methods; it has run once (routes in place).
func udpRoundTrip(tb testing.TB, gonetConn bool) func() {
	a, b, _, _ := newPair(tb, pairConfig{})
	ca, cb := udpSocket(tb, a, gonetConn), udpSocket(tb, b, gonetConn)
	toB := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ipB4, uint16(cb.LocalAddr().(*net.UDPAddr).Port)))
	msg, buf := make([]byte, 64), make([]byte, 2048)
	roundTrip := func() {
		if _, err := ca.WriteTo(msg, toB); err != nil {
			tb.Fatal(err)
		}
		n, from, err := cb.ReadFrom(buf)
		if err != nil || n != len(msg) {
			tb.Fatalf("read: %d bytes, %v", n, err)
		}
		if _, err := cb.WriteTo(buf[:n], from); err != nil {
			tb.Fatal(err)
		}
		if _, _, err := ca.ReadFrom(buf); err != nil {
			tb.Fatal(err)
		}
	}
	roundTrip()
	return roundTrip
}

// TestUDPConnAllocatesLess: a datagram from A's socket to B's and back costs fewer allocations
// through udpConn than through gonet.UDPConn, which it replaces (gVisor's own per-packet ones and
// the test wire's copy remain in both).
func TestUDPConnAllocatesLess(t *testing.T) {
	theirs := testing.AllocsPerRun(200, udpRoundTrip(t, true))
	mine := testing.AllocsPerRun(200, udpRoundTrip(t, false))
	t.Logf("allocations per round trip: gonet.UDPConn %.1f, udpConn %.1f", theirs, mine)
	// Through the net.PacketConn methods (a *net.UDPAddr per read, as gonet): reads save the waiter
	// entry and the reader, writes the FullAddress and the reader.
	if mine > theirs-4 {
		t.Errorf("udpConn allocates %.1f times per round trip, gonet.UDPConn %.1f: want at least 4 fewer", mine, theirs)
	}
}

// BenchmarkUDPRoundTrip: a 64-byte datagram to the other stack and back, through udpConn and, for
// comparison, gonet.UDPConn (the test wire between the stacks copies each packet and hands it over
// on a goroutine of its own, as a node's link does not).
func BenchmarkUDPRoundTrip(b *testing.B) {
	for _, c := range []struct {
		name  string
		gonet bool
	}{{"udpConn", false}, {"gonet", true}} {
		b.Run(c.name, func(b *testing.B) {
			roundTrip := udpRoundTrip(b, c.gonet)
			b.ReportAllocs()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}
