package e2e

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/node"
)

// TestIdleLinkWakes: with a short --link-idle, a quiet link winds down on both nodes (status
// "idle"), and the first use brings it back without losing that use: a UDP datagram through the
// SOCKS5 proxy (held in the send queue until the link is back, then echoed), and a proxied TCP
// connection (its stream waits for the link). Each time the pair ends direct again.
func TestIdleLinkWakes(t *testing.T) {
	echoUDP := udpEchoService(t, 0)
	echoTCP := echoServer(t)
	c := startCoord(t, t.TempDir())
	a, b, bIP := idlePair(t, c, node.Port{Proto: "udp", Port: echoUDP}, node.Port{Proto: "tcp", Port: echoTCP})
	u := newSocksUDP(t, a.SOCKSAddr().String())
	start := time.Now()
	u.sendTo(bIP.String(), echoUDP, "wake up")
	src, payload, ok := u.recv(10 * time.Second)
	if !ok || src != netip.AddrPortFrom(bIP, echoUDP) || payload != "echo:wake up" {
		t.Fatalf("the datagram that woke the link: reply %v %q %v, want the echo from %v", src, payload, ok, bIP)
	}
	t.Logf("UDP round trip through a woken link: %v", time.Since(start))
	a.waitPath(t, "b", "direct")

	a.waitPath(t, "b", "idle")
	start = time.Now()
	defer dialEcho(t, a, netip.AddrPortFrom(bIP, echoTCP), "hello").Close()
	t.Logf("TCP connect and echo through a woken link: %v", time.Since(start))
	b.waitPath(t, "a", "direct")
}

// TestIdleLinksReturnWithoutCoord: links that wound down come back by themselves when the coord goes
// away, before anyone needs them: without the coord's relay and signals a dormant pair behind NATs
// could not find each other again, so both sides punch as soon as they lose it, and a connection
// made afterwards works over the direct path.
func TestIdleLinksReturnWithoutCoord(t *testing.T) {
	echoTCP := echoServer(t)
	c := startCoord(t, t.TempDir())
	a, b, bIP := idlePair(t, c, node.Port{Proto: "tcp", Port: echoTCP})

	c.srv.Close() // a clean stop: both nodes notice at once
	a.waitPath(t, "b", "direct")
	b.waitPath(t, "a", "direct")
	dialEcho(t, a, netip.AddrPortFrom(bIP, echoTCP), "still here").Close()
}

// idlePair starts nodes a and b (b exposing expose) with a 2 s --link-idle in one network, and
// returns once their link has come up direct and wound down on both sides; bIP is b's IPv4.
func idlePair(t *testing.T, c *testCoord, expose ...node.Port) (a, b *testNode, bIP netip.Addr) {
	t.Helper()
	quick := func(cfg *node.Config) { cfg.LinkIdle = 2 * time.Second }
	a = startNodeWith(t, c, "a", quick)
	b = startNodeWith(t, c, "b", func(cfg *node.Config) {
		quick(cfg)
		cfg.Expose = append(cfg.Expose, expose...)
	})
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	a.waitPath(t, "b", "idle")
	b.waitPath(t, "a", "idle")
	return a, b, b.Status().Self.IPs[0]
}

// dialEcho connects through n's SOCKS proxy to the line echo server at dst, checks that line comes
// back (echoLine), and returns the connection.
func dialEcho(t *testing.T, n *testNode, dst netip.AddrPort, line string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := n.socksDialer(t).DialContext(ctx, "tcp", dst.String())
	if err != nil {
		t.Fatalf("connect to %v through %s: %v", dst, n.name, err)
	}
	if err := echoLine(conn, line); err != nil {
		conn.Close()
		t.Fatalf("echo from %v through %s: %v", dst, n.name, err)
	}
	return conn
}
