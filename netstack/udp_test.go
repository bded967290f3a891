package netstack

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// udpEcho serves UDP echo on 127.0.0.1 and returns its port.
func udpEcho(t *testing.T) uint16 {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// TestExposeUDP: datagrams to B's exposed UDP port — unicast, limited broadcast, the overlay's
// broadcast address and multicast — reach the host service, and its replies come back from B's address.
func TestExposeUDP(t *testing.T) {
	port := udpEcho(t)
	a, b, _, _ := pair(t)
	if err := b.ExposeUDP(port); err != nil {
		t.Fatal(err)
	}
	pc, err := a.ListenUDP("udp4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, dst := range []string{ipB4.String(), "255.255.255.255", "100.127.255.255", "239.255.0.1"} {
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), port))
		if _, err := pc.WriteTo([]byte(dst), to); err != nil {
			t.Errorf("send to %s: %v", dst, err)
			continue
		}
		pc.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 100)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Errorf("%s: no reply: %v", dst, err)
			continue
		}
		if string(buf[:n]) != "echo:"+dst || from.(*net.UDPAddr).AddrPort() != netip.AddrPortFrom(ipB4, port) {
			t.Errorf("%s: reply %q from %v", dst, buf[:n], from)
		}
	}
	// An unexposed port gets nothing (a bounded wait: no counter says the datagram was dropped, and
	// a reply could only come through a forwarder, so the check can only miss a bug, never fail).
	pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ipB4, port+1)))
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := pc.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("unexposed port answered %d bytes from %v", n, from)
	}
}

func TestPingThroughBothStacks(t *testing.T) {
	a, _, _, _ := pair(t)
	for i, dst := range []netip.Addr{ipB4, ipB6} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rtt, err := a.Ping(ctx, dst, uint16(i+1))
		cancel()
		if err != nil || rtt <= 0 {
			t.Errorf("ping %v: %v %v", dst, rtt, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("100.64.0.99"), 9); err == nil {
		t.Error("ping to nobody answered")
	}
}
