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

// TestUDPConnAllocatesLess: a datagram from A's socket to B's and back costs fewer allocations
// through udpConn than through gonet.UDPConn, which it replaces (gVisor's own per-packet ones and
// the test wire's copy remain in both).
func TestUDPConnAllocatesLess(t *testing.T) {
	a, b, _, _ := pair(t)
	gonetConn := func(s *Stack) net.PacketConn {
		var wq waiter.Queue
		ep, terr := s.s.NewEndpoint(udp.ProtocolNumber, netProto(ipA4), &wq)
		if terr != nil {
			t.Fatal(terr)
		}
		if terr := ep.Bind(tcpip.FullAddress{NIC: nicID}); terr != nil {
			t.Fatal(terr)
		}
		c := gonet.NewUDPConn(&wq, ep)
		t.Cleanup(func() { c.Close() })
		return c
	}
	ours := func(s *Stack) net.PacketConn {
		c, err := s.ListenUDP("udp4")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	perRoundTrip := func(open func(*Stack) net.PacketConn) float64 {
		ca, cb := open(a), open(b)
		toB := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ipB4, uint16(cb.LocalAddr().(*net.UDPAddr).Port)))
		msg, buf := []byte("ping"), make([]byte, 64)
		roundTrip := func() {
			if _, err := ca.WriteTo(msg, toB); err != nil {
				t.Fatal(err)
			}
			n, from, err := cb.ReadFrom(buf)
			if err != nil || n != len(msg) {
				t.Fatalf("read: %d bytes, %v", n, err)
			}
			if _, err := cb.WriteTo(buf[:n], from); err != nil {
				t.Fatal(err)
			}
			if _, _, err := ca.ReadFrom(buf); err != nil {
				t.Fatal(err)
			}
		}
		roundTrip() // routes and neighbours in place
		return testing.AllocsPerRun(200, roundTrip)
	}
	theirs, mine := perRoundTrip(gonetConn), perRoundTrip(ours)
	t.Logf("allocations per round trip: gonet.UDPConn %.1f, udpConn %.1f", theirs, mine)
	// Through the net.PacketConn methods (a *net.UDPAddr per read, as gonet): reads save the waiter
	// entry and the reader, writes the FullAddress and the reader.
	if mine > theirs-4 {
		t.Errorf("udpConn allocates %.1f times per round trip, gonet.UDPConn %.1f: want at least 4 fewer", mine, theirs)
	}
}
