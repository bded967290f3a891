package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/node"
)

// udpEchoService answers every datagram with "echo:<payload>" from 127.0.0.1:port. Several can share
// one port (SO_REUSEPORT), standing in for the same game server on several machines.
func udpEchoService(t *testing.T, port int) uint16 {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = setsockoptInt(fd, syscall.SOL_SOCKET, unix_SO_REUSEPORT, 1) })
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	serveUDPEcho(t, pc)
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// serveUDPEcho answers every datagram on c with "echo:<payload>" until the test ends (it closes c).
func serveUDPEcho(t *testing.T, c net.PacketConn) {
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
}

// unix_SO_REUSEPORT is SO_REUSEPORT on Linux (not in package syscall).
const unix_SO_REUSEPORT = 0xf

// socksUDP is a minimal UDP ASSOCIATE client.
type socksUDP struct {
	ctrl  net.Conn
	relay netip.AddrPort
	sock  *net.UDPConn
}

func newSocksUDP(t *testing.T, proxy string) *socksUDP {
	t.Helper()
	ctrl, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	ctrl.SetDeadline(time.Now().Add(5 * time.Second))
	ctrl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var r [12]byte
	if _, err := io.ReadFull(ctrl, r[:]); err != nil || r[3] != 0 {
		t.Fatalf("UDP ASSOCIATE: %v %v", r, err)
	}
	ctrl.SetDeadline(time.Time{})
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return &socksUDP{ctrl: ctrl, sock: sock,
		relay: netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[6:10])), binary.BigEndian.Uint16(r[10:12]))}
}

func (s *socksUDP) sendTo(host string, port uint16, payload string) {
	b := []byte{0, 0, 0}
	if ip, err := netip.ParseAddr(host); err == nil {
		b = append(b, 1)
		b = append(b, ip.AsSlice()...)
	} else {
		b = append(b, 3, byte(len(host)))
		b = append(b, host...)
	}
	b = binary.BigEndian.AppendUint16(b, port)
	s.sock.WriteToUDPAddrPort(append(b, payload...), s.relay)
}

// recv returns the next reply's source and payload, or false after the timeout.
func (s *socksUDP) recv(timeout time.Duration) (netip.AddrPort, string, bool) {
	s.sock.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, err := s.sock.Read(buf)
	if err != nil || n < 10 || buf[3] != 1 {
		return netip.AddrPort{}, "", false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), binary.BigEndian.Uint16(buf[8:10]))
	return src, string(buf[10:n]), true
}

// ask sends payload to host:port through the proxy, again every second (each copy numbered), until
// the replies to one copy satisfy enough or 30 s pass. It returns the sources of that copy's replies
// and true, or after 30 s those of all copies and false. A datagram may be lost on its way (the links carry UDP as QUIC
// DATAGRAMs, the netstacks' queues drop when full): resending rides that out, while what a single
// copy reaches is still checked as a whole.
func (s *socksUDP) ask(host string, port uint16, payload string, enough func(from map[netip.AddrPort]bool) bool) (map[netip.AddrPort]bool, bool) {
	byCopy, all := map[string]map[netip.AddrPort]bool{}, map[netip.AddrPort]bool{}
	for i, deadline := 0, time.Now().Add(30*time.Second); time.Now().Before(deadline); i++ {
		s.sendTo(host, port, fmt.Sprintf("%s #%d", payload, i))
		for resend := time.Now().Add(time.Second); ; {
			src, got, ok := s.recv(time.Until(resend))
			if !ok {
				break
			}
			if !strings.HasPrefix(got, "echo:"+payload+" #") {
				continue
			}
			if byCopy[got] == nil {
				byCopy[got] = map[netip.AddrPort]bool{}
			}
			byCopy[got][src], all[src] = true, true
			if enough(byCopy[got]) {
				return byCopy[got], true
			}
		}
	}
	return all, false
}

// TestUDPAndBroadcast: a game-like UDP service exposed on two peers is reached by name through UDP
// ASSOCIATE; a broadcast (255.255.255.255 and the overlay broadcast address) and a multicast
// datagram reach both, each reply coming from its server's overlay address; a node in another
// network hears nothing; a broadcast flood is cut by the rate limit.
func TestUDPAndBroadcast(t *testing.T) {
	port := udpEchoService(t, 0)
	udpEchoService(t, int(port)) // c's copy of the same server
	c := startCoord(t, t.TempDir())
	exposeUDP := func(cfg *node.Config) { cfg.Expose = append(cfg.Expose, node.Port{Proto: "udp", Port: port}) }
	a := startNode(t, c, "a")
	b := startNodeWith(t, c, "b", exposeUDP)
	cc := startNodeWith(t, c, "c", exposeUDP)
	outsider := startNodeWith(t, c, "outsider", exposeUDP)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	cc.network(t, "join", "lan", "")
	outsider.network(t, "create", "elsewhere", "")
	a.waitPath(t, "b", "direct")
	a.waitPath(t, "c", "direct")
	bIP, cIP := b.Status().Self.IPs[0], cc.Status().Self.IPs[0]
	outsiderIP := outsider.Status().Self.IPs[0]

	u := newSocksUDP(t, a.SOCKSAddr().String())
	from, ok := u.ask("b.warren", port, "hi b", func(from map[netip.AddrPort]bool) bool { return len(from) > 0 })
	if !ok || !from[netip.AddrPortFrom(bIP, port)] || len(from) != 1 {
		t.Fatalf("unicast by name: echoed from %v, want b (%v)", from, bIP)
	}

	bAt, cAt, outsiderAt := netip.AddrPortFrom(bIP, port), netip.AddrPortFrom(cIP, port), netip.AddrPortFrom(outsiderIP, port)
	for _, dst := range []string{"255.255.255.255", "100.127.255.255", "239.255.77.77"} {
		from, ok := u.ask(dst, port, "discover "+dst, func(from map[netip.AddrPort]bool) bool { return len(from) >= 2 })
		if !ok || !from[bAt] || !from[cAt] || from[outsiderAt] || len(from) != 2 {
			t.Errorf("%s reached %v (all from one copy: %v), want exactly b (%v) and c (%v)", dst, from, ok, bIP, cIP)
		}
	}

	// A flood: 2000 broadcasts at once. Every reply is one delivered datagram; the limits (sender
	// and receiver buckets of 400) bound them far below 2000 per receiver.
	time.Sleep(2 * time.Second) // refill the buckets
	for i := 0; i < 2000; i++ {
		u.sendTo("255.255.255.255", port, "flood")
	}
	replies := 0
	for {
		_, payload, ok := u.recv(500 * time.Millisecond)
		if !ok {
			break
		}
		if payload == "echo:flood" {
			replies++
		}
	}
	t.Logf("2000 broadcasts to 2 peers: %d replies", replies)
	if replies == 0 || replies > 2*(400+200) {
		t.Errorf("flood: %d replies, want 1..%d", replies, 2*(400+200))
	}
}
