package e2e

import (
	"bufio"
	"context"
	"fmt"
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
	quick := func(cfg *node.Config) { cfg.LinkIdle = 2 * time.Second }
	a := startNodeWith(t, c, "a", quick)
	b := startNodeWith(t, c, "b", func(cfg *node.Config) {
		quick(cfg)
		cfg.Expose = append(cfg.Expose, node.Port{Proto: "udp", Port: echoUDP}, node.Port{Proto: "tcp", Port: echoTCP})
	})
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	bIP := b.Status().Self.IPs[0]

	a.waitPath(t, "b", "idle")
	b.waitPath(t, "a", "idle")
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start = time.Now()
	conn, err := a.socksDialer(t).DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", bIP, echoTCP))
	if err != nil {
		t.Fatalf("a connection through an idle link: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(conn, "hello")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo through the woken link: %q, %v", line, err)
	}
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
	quick := func(cfg *node.Config) { cfg.LinkIdle = 2 * time.Second }
	a := startNodeWith(t, c, "a", quick)
	b := startNodeWith(t, c, "b", quick, echoTCP)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	bIP := b.Status().Self.IPs[0]
	a.waitPath(t, "b", "idle")
	b.waitPath(t, "a", "idle")

	c.srv.Close() // a clean stop: both nodes notice at once
	a.waitPath(t, "b", "direct")
	b.waitPath(t, "a", "direct")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := a.socksDialer(t).DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", bIP, echoTCP))
	if err != nil {
		t.Fatalf("a connection with the coord gone: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(conn, "still here")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("echo with the coord gone: %q, %v", line, err)
	}
}
