package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
	"github.com/warren-net/warren/node/localapi"
)

type testCoord struct {
	srv  *coord.Server
	addr string
	key  string
}

func startCoord(t testing.TB, dir string) *testCoord {
	t.Helper()
	return startCoordWith(t, dir, nil)
}

// startCoordWith lets the caller adjust the server's config before it starts. The coord gets a second
// port for NAT discovery, like the binary's default.
func startCoordWith(t testing.TB, dir string, adjust func(*coord.Config)) *testCoord {
	t.Helper()
	pools := store.Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")}
	st, err := store.Open(filepath.Join(dir, "warren.db"), pools)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.LoadOrCreate(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := coord.Config{Key: key, Store: st, Pools: pools, Conn: pc, ProbeConn: probe, Logger: testkit.LoggerAt(t, "coord", hclog.Info)}
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := coord.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &testCoord{srv: srv, addr: srv.Addr().String(), key: key.Fingerprint()}
}

type testNode struct {
	*node.Node
	name  string
	state string
	api   *localapi.Client
}

func startNode(t testing.TB, c *testCoord, name string, expose ...uint16) *testNode {
	t.Helper()
	return startNodeWith(t, c, name, nil, expose...)
}

// startNodeWith lets the caller adjust the node's config before it starts.
func startNodeWith(t testing.TB, c *testCoord, name string, adjust func(*node.Config), expose ...uint16) *testNode {
	t.Helper()
	state := t.TempDir()
	var ports []node.Port
	for _, p := range expose {
		ports = append(ports, node.Port{Proto: "tcp", Port: p})
	}
	cfg := node.Config{
		StateDir: state, Coord: c.addr, CoordKey: c.key, Name: name, Listen: "127.0.0.1:0",
		SOCKS: "127.0.0.1:0", Expose: ports, Logger: testkit.LoggerAt(t, name, hclog.Info), CoordTimeout: 10 * time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	state = cfg.StateDir
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNode{Node: n, name: name, state: state, api: localapi.NewClient(state)}
}

// key returns the node's public identity key.
func (n *testNode) key(t testing.TB) []byte {
	k, _, err := identity.LoadOrCreate(filepath.Join(n.state, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// peerState returns how n sees the named peer (zero value if absent).
func (n *testNode) peerState(name string) localapi.Peer {
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p
		}
	}
	return localapi.Peer{}
}

// network creates, joins or leaves a network; a network created without a password is open.
func (n *testNode) network(t testing.TB, op, name, password string) {
	t.Helper()
	req := localapi.NetworkRequest{Op: op, Name: name, Password: password, Open: op == "create" && password == ""}
	if _, err := n.api.Network(context.Background(), req); err != nil {
		t.Fatalf("%s: network %s %s: %v", n.name, op, name, err)
	}
}

// later formats as f's value at the time it is printed: a failure message's view of the last state a
// wait saw (testkit.Eventually formats its message when it gives up).
type later func() any

func (f later) String() string { return fmt.Sprint(f()) }

// waitPath waits until n sees peer with the given path.
func (n *testNode) waitPath(t testing.TB, peerName, path string) localapi.Peer {
	t.Helper()
	var found localapi.Peer
	var last localapi.Status
	testkit.Eventually(t, 60*time.Second, func() bool {
		last = n.Status()
		for _, p := range last.Peers {
			if p.Name == peerName && p.Path == path {
				found = p
				return true
			}
		}
		return false
	}, "%s never saw %s with path %q; status: %+v", n.name, peerName, path, &last)
	return found
}

// socksDialer returns a dialer through n's SOCKS5 proxy.
func (n *testNode) socksDialer(t testing.TB) proxy.ContextDialer {
	d, err := proxy.SOCKS5("tcp", n.SOCKSAddr().String(), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d.(proxy.ContextDialer)
}

func (n *testNode) httpClient(t testing.TB) *http.Client {
	d := n.socksDialer(t)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// blobServer serves a random blob of size bytes on 127.0.0.1 and returns its port and sha256.
func blobServer(t testing.TB, size int) (port uint16, sum [32]byte) {
	t.Helper()
	blob := make([]byte, size)
	rand.Read(blob)
	sum = sha256.Sum256(blob)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			fmt.Fprintln(w, "hello from b")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
		w.Write(blob)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port), sum
}

// serveEach accepts connections on ln until the test ends, each handled by handle in a goroutine
// of its own.
func serveEach(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

func fetch(t testing.TB, c *http.Client, url string) ([]byte, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return b, time.Since(start)
}
