package socks

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// waitCount waits until c reaches want.
func waitCount(t *testing.T, c *atomic.Uint64, want uint64) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { return c.Load() >= want }, "counter at %d, want %d", c.Load(), want)
}

// On loopback every local user shares 127.0.0.1: the first datagram that reaches an association's
// relay socket must not claim it unless Config.UDPClientAllowed says its sender is the client's.
func TestUDPClaimNeedsAllowedSender(t *testing.T) {
	echoAddr := udpEcho(t)

	intruder, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer intruder.Close()
	client, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer client.Close()
	var asked atomic.Uint64
	s, err := New(Config{
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		ListenUDP: func() (net.PacketConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		},
		UDPClientAllowed: func(from netip.AddrPort) bool {
			asked.Add(1)
			return from == client.LocalAddr().(*net.UDPAddr).AddrPort()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	ctrl, relay := associate(t, ln.Addr().String())
	defer ctrl.Close()

	intruder.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "first"), relay)
	waitCount(t, &s.UDPStats().Foreign, 1)

	client.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "mine"), relay)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := client.Read(buf)
	if err != nil {
		t.Fatalf("the allowed client after a refused one: %v", err)
	}
	if _, payload, err := ParseUDPHeader(buf[:n]); err != nil || string(payload) != "mine" {
		t.Fatalf("reply %q %v", payload, err)
	}

	// Once claimed, the association asks no more and keeps refusing the intruder.
	intruder.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "again"), relay)
	waitCount(t, &s.UDPStats().Foreign, 2)
	if asked.Load() != 2 {
		t.Errorf("UDPClientAllowed asked %d times, want 2 (once per claim attempt)", asked.Load())
	}
}
