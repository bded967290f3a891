package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/node"
)

// TestIdleLinkWakes: with a short --link-idle, a quiet link winds down on both nodes (status
// "idle"), and the first use brings it back without losing that use: a UDP datagram through the
// SOCKS5 proxy (held in the send queue until the link is back, then echoed), and a proxied TCP
// connection (its stream waits for the link, and for the direct one: its bytes never cross the
// relay). Each time the pair ends direct again.
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
	before, _ := scrapeNode(t, a.state)
	start = time.Now()
	conn := dialEcho(t, a, netip.AddrPortFrom(bIP, echoTCP), "hello")
	defer conn.Close()
	t.Logf("TCP connect and echo through a woken link: %v", time.Since(start))
	b.waitPath(t, "a", "direct")

	// The connection that woke the link rides the direct path, not the relay link that came up
	// first (streams never move between links): a MiB through it crosses the relay not at all.
	const bulk = 1 << 20
	echoBulk(t, conn, bulk)
	after, _ := scrapeNode(t, a.state)
	sent := func(f metrics.Families, path string) float64 {
		return sample(f, "warren_node_link_sent_bytes_total", "path", path)
	}
	relayed, direct := sent(after, "relay")-sent(before, "relay"), sent(after, "direct")-sent(before, "direct")
	if relayed > bulk/4 || direct < bulk {
		t.Errorf("a MiB through the connection that woke the link: %.0f bytes sent relayed, %.0f direct; want it all direct", relayed, direct)
	}
}

// echoBulk writes n bytes on c and reads them back from the echo server behind it.
func echoBulk(t *testing.T, c net.Conn, n int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	msg := bytes.Repeat([]byte("warren"), n/6+1)[:n]
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		wrote <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes: %v (intact: %v)", n, err, bytes.Equal(got, msg))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
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
