package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/relay"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
)

// relayTap records what the coord relays.
type relayTap struct {
	mu     sync.Mutex
	bytes  int
	marker []byte
	seen   bool // marker seen in a relayed payload
}

func (r *relayTap) tap(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes += len(b)
	if bytes.Contains(b, r.marker) {
		r.seen = true
	}
}

func (r *relayTap) stats() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes, r.seen
}

// markerServer serves body, made of a marker repeated, on 127.0.0.1.
func markerServer(t *testing.T, marker []byte, size int) uint16 {
	t.Helper()
	body := bytes.Repeat(marker, size/len(marker))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestRelay: two nodes that may not use direct paths talk through the coord's relay, over the stream
// path and the packet path, and the relay carries only ciphertext: a marker that fills the transfer
// never appears in what it forwards.
func TestRelay(t *testing.T) {
	m := make([]byte, 16)
	rand.Read(m)
	tap := &relayTap{marker: []byte(hex.EncodeToString(m))}
	c := startCoordWith(t, t.TempDir(), func(cfg *coord.Config) { cfg.RelayTap = tap.tap })
	port := markerServer(t, tap.marker, 8<<20)
	noDirect := func(cfg *node.Config) { cfg.NoDirect = true }
	a := startNodeWith(t, c, "a", noDirect)
	b := startNodeWith(t, c, "b", noDirect, port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")

	p := a.waitPath(t, "b", "relay")
	if p.Endpoint != c.addr {
		t.Errorf("relayed peer's endpoint = %q, want the coord %q", p.Endpoint, c.addr)
	}
	body, d := fetch(t, a.httpClient(t), fmt.Sprintf("http://b.warren:%d/", port))
	if len(body) != 8<<20 || !bytes.HasPrefix(body, tap.marker) {
		t.Fatalf("fetched %d bytes through the relay, want 8 MiB of the marker", len(body))
	}
	t.Logf("8 MiB through the relay (stream path): %v, %.1f MB/s", d, float64(len(body))/d.Seconds()/1e6)
	ping, err := a.Ping(context.Background(), "b", 1)
	if err != nil {
		t.Fatalf("ping through the relay: %v", err)
	}
	if ping.Path != "relay" {
		t.Errorf("ping path = %q, want relay", ping.Path)
	}
	relayed, seen := tap.stats()
	if relayed < 8<<20 {
		t.Errorf("the relay forwarded %d bytes, less than the 8 MiB transfer: did it take another path?", relayed)
	}
	if seen {
		t.Fatal("the relay saw plaintext: the marker appeared in a relayed payload")
	}

	rep, err := a.Netcheck(context.Background())
	if err != nil {
		t.Fatalf("netcheck: %v", err)
	}
	if !rep.UDP || rep.Public.String() != a.Status().Self.Endpoint || rep.Mapping != "endpoint-independent" || rep.Relay.String() != c.addr {
		t.Errorf("netcheck on loopback = %+v, want UDP, public %s, endpoint-independent, relay %s", rep, a.Status().Self.Endpoint, c.addr)
	}
}

// echoServer echoes lines on 127.0.0.1.
func echoServer(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestRelayToDirect: a long-lived proxied TCP connection (an SSH session, say) opened while the peers
// were relayed keeps working after a direct path appears and new traffic moves to it.
func TestRelayToDirect(t *testing.T) {
	c := startCoord(t, t.TempDir())
	port := echoServer(t)
	noDirect := func(cfg *node.Config) { cfg.NoDirect = true }
	a := startNodeWith(t, c, "a", noDirect)
	b := startNodeWith(t, c, "b", noDirect, port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "relay")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := a.socksDialer(t).DialContext(ctx, "tcp", fmt.Sprintf("b.warren:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	say := func(line string) {
		t.Helper()
		if _, err := fmt.Fprintln(conn, line); err != nil {
			t.Fatalf("write %q: %v", line, err)
		}
		got, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(got) != line {
			t.Fatalf("echo of %q = %q, %v", line, got, err)
		}
	}
	say("over the relay")

	start := time.Now()
	a.SetDirect(true)
	b.SetDirect(true)
	a.waitPath(t, "b", "direct")
	b.waitPath(t, "a", "direct")
	t.Logf("relay to direct in %v", time.Since(start))
	say("still here after the move to direct")

	conn2, err := a.socksDialer(t).DialContext(ctx, "tcp", fmt.Sprintf("b.warren:%d", port))
	if err != nil {
		t.Fatalf("new connection after the move: %v", err)
	}
	conn2.Close()
	say("and still here")
}

// TestStandaloneRelayInProcess is TestStandaloneRelay's core in one process, so the race detector sees
// the node's relay login: a coord without a relay of its own announces a standalone one, two nodes
// that may not use direct paths meet on it, and it carries only ciphertext.
func TestStandaloneRelayInProcess(t *testing.T) {
	m := make([]byte, 16)
	rand.Read(m)
	tap := &relayTap{marker: []byte(hex.EncodeToString(m))}
	rkey, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := relay.NewServer(relay.ServerConfig{Key: rkey, Conn: pc, Tap: tap.tap, Logger: testkit.LoggerAt(t, "relay", hclog.Info)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	relayAddr := netip.MustParseAddrPort(rs.Addr().String())
	c := startCoordWith(t, t.TempDir(), func(cfg *coord.Config) {
		cfg.NoRelay = true
		cfg.Relays = []control.Relay{{Addr: relayAddr, Key: rkey.Fingerprint()}}
	})
	port := markerServer(t, tap.marker, 1<<20)
	noDirect := func(cfg *node.Config) { cfg.NoDirect = true }
	a := startNodeWith(t, c, "a", noDirect)
	b := startNodeWith(t, c, "b", noDirect, port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	if p := a.waitPath(t, "b", "relay"); p.Endpoint != relayAddr.String() {
		t.Errorf("relayed peer's endpoint = %q, want the standalone relay %s", p.Endpoint, relayAddr)
	}
	body, _ := fetch(t, a.httpClient(t), fmt.Sprintf("http://b.warren:%d/", port))
	if len(body) != 1<<20 {
		t.Fatalf("fetched %d bytes through the standalone relay, want 1 MiB", len(body))
	}
	if relayed, seen := tap.stats(); relayed < 1<<20 || seen {
		t.Fatalf("the standalone relay forwarded %d bytes, marker seen %v: want at least 1 MiB, never the marker", relayed, seen)
	}
	if rs.Nodes() != 2 {
		t.Errorf("%d nodes logged in to the relay, want 2", rs.Nodes())
	}
}
