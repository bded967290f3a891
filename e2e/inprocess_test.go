package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
)

// TestThreeNodes: A and B share a network, C is in another. A reaches B's exposed HTTP service by name
// through its SOCKS proxy and moves 64 MiB intact; A cannot reach C; an unexposed port is refused at
// once; a wrong password is refused.
func TestThreeNodes(t *testing.T) {
	const size = 64 << 20
	port, sum := blobServer(t, size)
	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", port)
	cc := startNode(t, c, "c", port)

	a.network(t, "create", "lan", "s3cret")
	b.network(t, "join", "lan", "s3cret")
	cc.network(t, "create", "other", "")
	if _, err := cc.Network(context.Background(), "join", "lan", "wrong"); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("join with wrong password: %v", err)
	}
	if _, err := cc.Network(context.Background(), "join", "nope", ""); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("join unknown network: %v", err)
	}

	pb := a.waitPath(t, "b", "direct")
	t.Logf("a sees b: %+v", pb)
	client := a.httpClient(t)

	body, _ := fetch(t, client, fmt.Sprintf("http://b.warren:%d/hello", port))
	if string(body) != "hello from b\n" {
		t.Fatalf("hello: got %q", body)
	}

	body, took := fetch(t, client, fmt.Sprintf("http://b.warren:%d/blob", port))
	if len(body) != size || sha256.Sum256(body) != sum {
		t.Fatalf("64 MiB transfer corrupted: got %d bytes", len(body))
	}
	t.Logf("64 MiB through SOCKS → a → QUIC → b → localhost: %v, %.1f MB/s", took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)

	d := a.socksDialer(t)
	// An unexposed port on b is refused with SOCKS "connection refused", not left to time out (10 s
	// here, a safety net: the refusal takes a round trip, or a SYN retry when a datagram is lost).
	refuseCtx, cancelRefuse := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelRefuse()
	start := time.Now()
	_, err := d.DialContext(refuseCtx, "tcp", fmt.Sprintf("b.warren:%d", port+1))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("unexposed port: got %v after %v, want connection refused", err, time.Since(start))
	}
	// c is not a peer of a: its name is unknown and its IP unreachable.
	if _, err := d.DialContext(context.Background(), "tcp", fmt.Sprintf("c.warren:%d", port)); err == nil {
		t.Error("a reached c by name")
	}
	cIP := cc.Status().Self.IPs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(cIP.String(), fmt.Sprint(port))); err == nil {
		conn.Close()
		t.Error("a reached c by IP")
	}
	for _, p := range a.Status().Peers {
		if p.Name == "c" {
			t.Error("c appears in a's peer map")
		}
	}

	// Leaving the network removes the peer on both sides.
	b.network(t, "leave", "lan", "")
	testkit.Eventually(t, 60*time.Second, func() bool { return len(a.Status().Peers) == 0 }, "b still visible to a after leaving")
}

// TestPacketPathTCP: with proxied TCP sent as IP packets through both netstacks, the same transfer
// arrives intact and an unexposed port is refused by a RST.
func TestPacketPathTCP(t *testing.T) {
	const size = 16 << 20
	port, sum := blobServer(t, size)
	c := startCoord(t, t.TempDir())
	a := startNodeWith(t, c, "a", func(cfg *node.Config) { cfg.PacketPathTCP = true })
	b := startNode(t, c, "b", port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	body, took := fetch(t, a.httpClient(t), fmt.Sprintf("http://b.warren:%d/blob", port))
	if len(body) != size || sha256.Sum256(body) != sum {
		t.Fatalf("transfer corrupted: %d bytes", len(body))
	}
	t.Logf("16 MiB over the packet path: %v, %.1f MB/s", took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
	// Refused by b's RST, not left to time out (10 s, a safety net: a lost SYN or RST costs a SYN
	// retry of a second).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.socksDialer(t).DialContext(ctx, "tcp", fmt.Sprintf("b.warren:%d", port+1))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("unexposed port over packets: %v after %v, want connection refused", err, time.Since(start))
	}
}
