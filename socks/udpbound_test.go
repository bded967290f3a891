package socks

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// An association passes back only datagrams from destinations its client sent to, or from peers
// once it sent to a fan-out (broadcast, multicast) address; anything else is unsolicited.
func TestUDPRepliesOnlyFromDestinations(t *testing.T) {
	listen := func(ip string) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ip+":0")))
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	server, stranger, peer := listen("127.0.0.1"), listen("127.0.0.2"), listen("127.0.0.3")
	// A stand-in for a broadcast address that the test can see datagrams arrive at.
	bcast := listen("127.0.0.4")
	fanout := bcast.LocalAddr().(*net.UDPAddr).AddrPort()
	outs := make(chan *net.UDPConn, 1)
	s, err := New(Config{
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		ListenUDP: func() (net.PacketConn, error) {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			outs <- c
			return c, err
		},
		FanOut: func(ip netip.Addr) bool { return ip == fanout.Addr() },
		Peer:   func(ip netip.Addr) bool { return ip == netip.MustParseAddr("127.0.0.3") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	ctrl, relay := associate(t, ln.Addr().String())
	defer ctrl.Close()
	out := (<-outs).LocalAddr().(*net.UDPAddr).AddrPort()
	client := listen("127.0.0.1")
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	recv := func() netip.AddrPort {
		t.Helper()
		buf := make([]byte, 2048)
		n, err := client.Read(buf)
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		h, _, err := ParseUDPHeader(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return netip.AddrPortFrom(h.Addr, h.Port)
	}
	serverAddr := server.LocalAddr().(*net.UDPAddr).AddrPort()

	// The client sends to server; the server's answer passes, a stranger's does not.
	client.WriteToUDPAddrPort(udpPacket(0, serverAddr, "", "hello"), relay)
	buf := make([]byte, 100)
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	stranger.WriteToUDPAddrPort([]byte("injected"), out)
	waitCount(t, &s.UDPStats().Unsolicited, 1)
	peer.WriteToUDPAddrPort([]byte("peer before fan-out"), out)
	waitCount(t, &s.UDPStats().Unsolicited, 2)
	server.WriteToUDPAddrPort([]byte("answer"), out)
	if got := recv(); got != serverAddr {
		t.Fatalf("client got a datagram from %v, want %v", got, serverAddr)
	}

	// After a send to the fan-out address, peers may answer; strangers still may not.
	client.WriteToUDPAddrPort(udpPacket(0, fanout, "", "who is there"), relay)
	bcast.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bcast.Read(buf); err != nil { // sent, so noted
		t.Fatal(err)
	}
	peer.WriteToUDPAddrPort([]byte("here"), out)
	if got := recv(); got.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("client got a datagram from %v, want the peer", got)
	}
	stranger.WriteToUDPAddrPort([]byte("injected"), out)
	waitCount(t, &s.UDPStats().Unsolicited, 3)
}

// The associations open at once are bounded; a closed one makes room.
func TestUDPAssociationsBounded(t *testing.T) {
	s, err := New(Config{
		Dial:            func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		ListenUDP:       func() (net.PacketConn, error) { return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) },
		MaxAssociations: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	first, _ := associate(t, ln.Addr().String())
	second, _ := associate(t, ln.Addr().String())
	defer second.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var r [4]byte // the method reply (5 0), then the request's: 5 REP ...
	if _, err := io.ReadFull(c, r[:]); err != nil || r[3] != 1 {
		t.Fatalf("third association: %v %v, want general failure (1) in the request's reply", r, err)
	}

	first.Close()
	testkit.Eventually(t, 10*time.Second, func() bool { return s.associations.Load() <= 1 }, "a closed association is still counted")
	third, _ := associate(t, ln.Addr().String())
	third.Close()
}
