package e2e

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
	"github.com/warren-net/warren/node/localapi"
)

// TestControlLossKeepsTunnel: when one node's control connection drops, the coord tells its peers;
// they keep the tunnel while it answers and show "control offline, tunnel up"; traffic still flows.
func TestControlLossKeepsTunnel(t *testing.T) {
	port, _ := blobServer(t, 1024)
	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")

	if !c.srv.Disconnect(b.key(t)) {
		t.Fatal("b was not logged in")
	}
	// Until b logs in again (its backoff starts at 1 s).
	testkit.Eventually(t, 30*time.Second, func() bool { return a.peerState("b").State == "control offline, tunnel up" },
		"a never showed b as control offline with the tunnel up")
	body, _ := fetch(t, a.httpClient(t), fmt.Sprintf("http://b.warren:%d/hello", port))
	if string(body) != "hello from b\n" {
		t.Errorf("through the tunnel while b's control is down: %q", body)
	}
	// b logs in again by itself (backoff from 1 s) and is online again.
	testkit.Eventually(t, 60*time.Second, func() bool { return a.peerState("b").State == "online" }, "b never came back online")
}

// TestPeerOffAndOn: a node that stops is offline at its peers, its tunnel freed; when it comes back
// with the same state dir (same addresses) the tunnel is up again. The times are logged, not bounded:
// a loaded machine stretches them (the waits' deadlines are safety nets).
func TestPeerOffAndOn(t *testing.T) {
	port, _ := blobServer(t, 1024)
	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	bIPs := b.Status().Self.IPs

	stopped := time.Now()
	b.Close()
	testkit.Eventually(t, 60*time.Second, func() bool { p := a.peerState("b"); return p.State == "offline" && p.Path == "none" },
		"b still online or its tunnel up at a after it stopped")
	t.Logf("b offline and its tunnel freed at a after %v", time.Since(stopped).Round(time.Millisecond))

	login := time.Now()
	b2 := startNodeWith(t, c, "b", func(cfg *node.Config) { cfg.StateDir = b.state }, port)
	if got := b2.Status().Self.IPs; got[0] != bIPs[0] || got[1] != bIPs[1] {
		t.Errorf("b came back with %v, had %v", got, bIPs)
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return a.peerState("b").Path == "direct" }, "tunnel not back after b's login")
	t.Logf("tunnel re-established %v after b's login", time.Since(login).Round(time.Millisecond))
	conn, err := a.socksDialer(t).DialContext(context.Background(), "tcp", fmt.Sprintf("b.warren:%d", port))
	if err != nil {
		t.Fatalf("dial b after its return: %v", err)
	}
	fmt.Fprint(conn, "GET /hello HTTP/1.0\r\n\r\n")
	got, _ := io.ReadAll(conn)
	conn.Close()
	if len(got) == 0 {
		t.Error("no answer from b after its return")
	}
}

// TestPeerKilled is TestPeerOffAndOn with the binaries and SIGKILL: bob cannot say goodbye, yet alice
// must see him offline, his tunnel freed; when he comes back (same state dir) the tunnel is up again.
// The measured times are logged, not bounded (the waits' deadlines are safety nets).
func TestPeerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	t.Parallel() // mostly waiting for alice to see bob offline: overlaps the other long waits
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	port, _ := blobServer(t, 1024)
	socksA := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0", "--socks", socksA)
	upB := []string{"up", "--coord", addr, "--coord-key", fp, "--state", stateB, "--name", "bob", "--listen", "127.0.0.1:0", "--socks", "",
		"--expose", fmt.Sprintf("tcp:%d", port)}
	b := startProc(t, "warren", upB...)
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "lan", "--state", stateA, "--open")
	warren(t, true, "network", "join", "lan", "--state", stateB)
	waitDirect(t, stateA, "bob")
	bIPs := statusOf(t, stateB).Self.IPs
	alice := localapi.NewClient(stateA)
	bob := func() localapi.Peer {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := alice.Status(ctx)
		if err != nil {
			t.Fatalf("alice's status: %v", err)
		}
		for _, p := range st.Peers {
			if p.Name == "bob" {
				return p
			}
		}
		return localapi.Peer{}
	}

	b.kill()
	killed := time.Now()
	var offline, freed time.Duration
	testkit.Eventually(t, 60*time.Second, func() bool {
		p := bob()
		if offline == 0 && !p.Online {
			offline = time.Since(killed)
		}
		if freed == 0 && p.Path == "none" {
			freed = time.Since(killed)
		}
		return offline != 0 && freed != 0
	}, "bob still online or his tunnel up at alice after kill -9")
	t.Logf("kill -9: alice saw bob offline (the coord told her) after %v and his tunnel freed after %v",
		offline.Round(time.Millisecond), freed.Round(time.Millisecond))

	b = startProc(t, "warren", upB...)
	b.line(t, "warren node") // printed once Start has logged in
	login := time.Now()
	if got := statusOf(t, stateB).Self.IPs; got[0] != bIPs[0] || got[1] != bIPs[1] {
		t.Errorf("bob came back with %v, had %v", got, bIPs)
	}
	testkit.Eventually(t, 60*time.Second, func() bool { p := bob(); return p.Path == "direct" && p.Online }, "tunnel not back after bob's login")
	t.Logf("tunnel re-established %v after bob's login", time.Since(login).Round(time.Millisecond))
	if body, err := socksGet(t, socksA, fmt.Sprintf("http://bob.warren:%d/hello", port)); err != nil || string(body) != "hello from b\n" {
		t.Errorf("through the tunnel after bob's return: %q %v", body, err)
	}
}
