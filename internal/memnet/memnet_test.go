package memnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

func TestDelivery(t *testing.T) {
	n := New()
	a, b := n.MustListen("10.0.0.1:0"), n.MustListen("10.0.0.2:7000")
	defer a.Close()
	defer b.Close()
	if _, err := n.Listen(netip.MustParseAddrPort("10.0.0.2:7000")); err == nil {
		t.Fatal("two Conns on one address")
	}
	if _, err := a.WriteTo([]byte("hello"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	a.WriteTo([]byte("nobody"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.3:1"))) // dropped
	buf := make([]byte, 100)
	nr, from, err := b.ReadFrom(buf)
	if err != nil || string(buf[:nr]) != "hello" || from.(*net.UDPAddr).AddrPort() != a.AddrPort() {
		t.Fatalf("read %q from %v: %v", buf[:nr], from, err)
	}

	// A full queue drops and counts; the queued packets come out in order.
	for i := range QueueLen + 3 {
		a.WriteTo([]byte{byte(i)}, b.LocalAddr())
	}
	if d := b.Drops(); d != 3 {
		t.Fatalf("%d drops, want 3", d)
	}
	for i := range QueueLen {
		if nr, _, err := b.ReadFrom(buf); err != nil || nr != 1 || buf[0] != byte(i) {
			t.Fatalf("packet %d: %v %v", i, buf[:nr], err)
		}
	}

	// The filter cuts a path one way.
	n.SetFilter(func(from, to netip.AddrPort) bool { return from != a.AddrPort() })
	a.WriteTo([]byte("cut"), b.LocalAddr())
	b.WriteTo([]byte("open"), a.LocalAddr())
	if nr, _, err := a.ReadFrom(buf); err != nil || string(buf[:nr]) != "open" {
		t.Fatalf("read %q: %v", buf[:nr], err)
	}
	b.SetReadDeadline(time.Now())
	if _, _, err := b.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a filtered packet arrived, or: %v", err)
	}
}

// TestDeadlinesAndClose: a read blocked on an empty queue ends at its deadline, when the deadline
// moves into the past, or when the Conn closes; a closed Conn's address is free again.
func TestDeadlinesAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New()
		c := n.MustListen("10.0.0.1:9")
		buf := make([]byte, 10)
		start := time.Now()
		c.SetReadDeadline(start.Add(time.Second))
		if _, _, err := c.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("read ended after %v: %v", time.Since(start), err)
		}
		c.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() { _, _, err := c.ReadFrom(buf); done <- err }()
		synctest.Wait()
		c.SetReadDeadline(time.Now())
		if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after the deadline moved: %v", err)
		}
		c.SetReadDeadline(time.Time{})
		go func() { _, _, err := c.ReadFrom(buf); done <- err }()
		synctest.Wait()
		c.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v", err)
		}
		if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Close: %v", err)
		}
		c2, err := n.Listen(c.AddrPort())
		if err != nil {
			t.Fatalf("the closed Conn's address: %v", err)
		}
		c2.Close()
	})
}
