package socks

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// associate opens a UDP ASSOCIATE on proxy and returns the control connection and relay address.
func associate(t *testing.T, proxy string) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var r [2 + 10]byte
	if _, err := io.ReadFull(c, r[:]); err != nil || r[3] != 0 {
		t.Fatalf("associate: %v %v", r, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[6:10])), binary.BigEndian.Uint16(r[10:12]))
	c.SetDeadline(time.Time{})
	return c, relay
}

func udpPacket(frag byte, dst netip.AddrPort, name string, payload string) []byte {
	b := []byte{0, 0, frag}
	if name != "" {
		b = append(b, 3, byte(len(name)))
		b = append(b, name...)
	} else {
		b = append(b, 1)
		b = append(b, dst.Addr().AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return append(b, payload...)
}

// udpEcho starts a UDP echo server on loopback, closed when the test ends, and returns its address.
func udpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			echo.WriteToUDP(buf[:n], from)
		}
	}()
	return echo.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDPAssociate(t *testing.T) {
	echoAddr := udpEcho(t)
	outClosed := make(chan struct{})
	s, err := New(Config{
		Dial:    func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		Resolve: func(context.Context, string) (netip.Addr, error) { return echoAddr.Addr(), nil },
		ListenUDP: func() (net.PacketConn, error) {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return nil, err
			}
			return &notifyClose{PacketConn: pc, closed: outClosed}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()

	ctrl, relay := associate(t, ln.Addr().String())
	client, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer client.Close()
	// roundTrip sends pkt and waits for a reply: 10 s for one that must come, less for one that must not.
	roundTrip := func(pkt []byte, wait time.Duration) ([]byte, error) {
		client.WriteToUDPAddrPort(pkt, relay)
		client.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 2048)
		n, err := client.Read(buf)
		return buf[:n], err
	}
	for _, name := range []string{"", "b.warren"} {
		got, err := roundTrip(udpPacket(0, echoAddr, name, "hello"), 10*time.Second)
		if err != nil {
			t.Fatalf("name %q: %v", name, err)
		}
		h, payload, err := ParseUDPHeader(got)
		if err != nil || string(payload) != "hello" || netip.AddrPortFrom(h.Addr, h.Port) != echoAddr {
			t.Fatalf("reply %x: %+v %q %v", got, h, payload, err)
		}
	}
	// Fragments are dropped and counted.
	if _, err := roundTrip(udpPacket(1, echoAddr, "", "frag"), 500*time.Millisecond); err == nil {
		t.Error("fragment relayed")
	}
	waitCount(t, &s.UDPStats().Fragmented, 1)
	if n := s.UDPStats().Fragmented.Load(); n != 1 {
		t.Errorf("fragments counted: %d", n)
	}
	// Another source address may not use the relay.
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err == nil {
		other.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "intruder"), relay)
		other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := other.Read(make([]byte, 100)); err == nil {
			t.Error("foreign client relayed")
		}
		other.Close()
	}
	// Closing the control connection ends the association.
	ctrl.Close()
	select {
	case <-outClosed: // the association closes its relay socket, then this one
	case <-time.After(10 * time.Second):
		t.Fatal("the association outlived its control connection")
	}
	if _, err := roundTrip(udpPacket(0, echoAddr, "", "late"), 500*time.Millisecond); err == nil {
		t.Error("association outlived its control connection")
	}
}

// TestUDPAssociateIdle: an association that relays nothing for UDPIdle ends, and closes its control
// connection: the client learns that its relay is gone, and the slot is free.
func TestUDPAssociateIdle(t *testing.T) {
	echoAddr := udpEcho(t)
	s, err := New(Config{
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		ListenUDP: func() (net.PacketConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		},
		UDPIdle:         300 * time.Millisecond,
		MaxAssociations: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()

	for i := range 2 { // the second association needs the first one's slot
		if i > 0 {
			// The slot is released just after the control connection closes: wait for it.
			testkit.Eventually(t, 10*time.Second, func() bool { return s.associations.Load() == 0 }, "the idle association's slot is free")
		}
		ctrl, relay := associate(t, ln.Addr().String())
		client, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		client.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "hello"), relay)
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := client.Read(make([]byte, 100)); err != nil {
			t.Fatalf("association %d: %v", i+1, err)
		}
		client.Close()
		ctrl.SetReadDeadline(time.Now().Add(10 * time.Second)) // a safety net, far past UDPIdle
		if n, err := ctrl.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("association %d idle: the control connection read %d bytes, %v; want EOF", i+1, n, err)
		}
		ctrl.Close()
	}
}

// notifyClose is a PacketConn that closes closed when it is closed.
type notifyClose struct {
	net.PacketConn
	closed chan struct{}
	once   sync.Once
}

func (c *notifyClose) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// TestParseUDPHeaderLongName: a name of 255 bytes, the most its length byte can say, parses (the
// fuzzer found the sum 1+255 computed in a byte, which wrapped to 0 and panicked on a client's
// datagram); one byte short of its port is refused.
func TestParseUDPHeaderLongName(t *testing.T) {
	name := strings.Repeat("a", 255)
	b := udpPacket(0, netip.MustParseAddrPort("1.2.3.4:53"), name, "query")
	h, payload, err := ParseUDPHeader(b)
	if err != nil || h.Name != name || h.Port != 53 || string(payload) != "query" {
		t.Fatalf("ParseUDPHeader: %+v, %q, %v", h, payload, err)
	}
	if _, _, err := ParseUDPHeader(b[:4+1+255+1]); err == nil {
		t.Fatal("a header cut inside its port parsed")
	}
}

func FuzzParseUDPHeader(f *testing.F) {
	f.Add(udpPacket(0, netip.MustParseAddrPort("100.64.0.2:27015"), "", "x"))
	f.Add(udpPacket(0, netip.MustParseAddrPort("1.2.3.4:53"), strings.Repeat("a", 255), "query"))
	f.Add(udpPacket(0, netip.MustParseAddrPort("1.2.3.4:53"), "b.warren", "query"))
	f.Add([]byte{0, 0, 0, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := ParseUDPHeader(b)
		if err != nil {
			return
		}
		if len(payload) > len(b) || (h.Name == "" && !h.Addr.IsValid()) {
			t.Fatalf("inconsistent parse of %x: %+v", b, h)
		}
	})
}
