package peercred

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// connPair returns both ends of a loopback TCP connection on network at host.
func connPair(t testing.TB, network, host string) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("%s %s: %v", network, host, err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// The netlink lookup itself (not its /proc fallback) finds our client sockets over IPv4 and IPv6.
func TestSockDiagFindsOwnSockets(t *testing.T) {
	me := uint32(os.Getuid())
	for _, tc := range []struct{ network, host string }{{"tcp4", "127.0.0.1"}, {"tcp6", "::1"}} {
		_, s := connPair(t, tc.network, tc.host)
		if uid, err := diagTCPOwner(addrPort(s.RemoteAddr()), addrPort(s.LocalAddr())); err != nil || uid != me {
			t.Errorf("%s: owner %d, %v; want %d", tc.network, uid, err, me)
		}
	}
}

// A client that reached a dual-stack listener over IPv4 is found from the server's view of it,
// ::ffff:127.0.0.1.
func TestSockDiagMappedIPv4(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), addrPort(ln.Addr()).Port()).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := addrPort(s.RemoteAddr())
	if !client.Addr().Is4In6() {
		t.Skipf("the server sees %v, not an IPv4-mapped address", client)
	}
	if uid, err := diagTCPOwner(client, addrPort(s.LocalAddr())); err != nil || uid != uint32(os.Getuid()) {
		t.Errorf("owner %d, %v; want %d", uid, err, os.Getuid())
	}
}

// A closed client socket is not found: gone, or in TIME_WAIT, which the kernel lists with uid 0
// and must never count.
func TestSockDiagClosedSocket(t *testing.T) {
	for _, serverFirst := range []bool{true, false} {
		c, s := connPair(t, "tcp4", "127.0.0.1")
		client, server := addrPort(s.RemoteAddr()), addrPort(s.LocalAddr())
		if serverFirst {
			s.Close()
			c.Close()
		} else {
			c.Close() // the client's end goes through FIN_WAIT2 to TIME_WAIT once the server closes
			s.Close()
		}
		// The client's end may be in FIN_WAIT* for a moment (still its process's).
		testkit.Eventually(t, 10*time.Second, func() bool {
			_, err := diagTCPOwner(client, server)
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
			return errors.Is(err, ErrNotFound)
		}, "closed socket (server closed first: %v) no longer found", serverFirst)
	}
	if _, err := diagTCPOwner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); !errors.Is(err, ErrNotFound) {
		t.Errorf("no such socket: %v", err)
	}
}

func TestParseDiagReplyRejectsJunk(t *testing.T) {
	src, dst := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1")
	for _, b := range [][]byte{nil, make([]byte, 15), make([]byte, 16), make([]byte, 100)} {
		if _, err := parseDiagReply(b, src, 1, dst, 2); err == nil {
			t.Errorf("%d bytes accepted", len(b))
		}
	}
}

func FuzzParseDiagReply(f *testing.F) {
	f.Add(make([]byte, nlmsgHdrLen+inetDiagMsgLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		src := netip.MustParseAddr("127.0.0.1")
		parseDiagReply(b, src, 1, src, 2) // must not panic
	})
}

// BenchmarkTCPOwner looks up one connection's owner while 5,000 other connections are open: the
// cost per accept of the SOCKS front's owner check (netlink, and the /proc scan it replaced).
func BenchmarkTCPOwner(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const open = 5000
	conns := make([]net.Conn, 0, 2*open)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var last net.Conn
	for range open {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c, s)
		last = s
	}
	client, server := addrPort(last.RemoteAddr()), addrPort(last.LocalAddr())
	for _, lookup := range []struct {
		name string
		f    func(l, r netip.AddrPort) (uint32, error)
	}{{"netlink", diagTCPOwner}, {"proc", procTCPOwner}} {
		b.Run(lookup.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := lookup.f(client, server); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
