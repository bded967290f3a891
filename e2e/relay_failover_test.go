package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
)

// failoverBound is how long data may stop when the relay in use dies. A peer link dies after 10 s of
// silence; failing over well within that keeps it (and the connections on it).
const failoverBound = 10 * time.Second

// TestStandaloneRelayFailover: a coord announces two standalone relays and keeps its own relay on;
// two nodes that may only talk through a relay meet on the first. Relay 1 is killed (SIGKILL, as a
// crash): both move to relay 2 within failoverBound, and a TCP connection opened through SOCKS
// before the kill carries on. Relay 2 is killed: both fall back to the coord's relay. Relay 1 comes
// back: both log in to it again and move back to it.
func TestStandaloneRelayFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	startRelay := func(name, listen string) (*proc, string, string) {
		p := startProc(t, "warren-coord", "relay", "--listen", listen, "--key", filepath.Join(tmp, name, "key.pem"))
		return p, p.line(t, "warren-coord relay listening on"), p.line(t, "key")
	}
	relay1, addr1, fp1 := startRelay("relay1", "127.0.0.1:0")
	relay2, addr2, fp2 := startRelay("relay2", "127.0.0.1:0")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"),
		"--relay", addr1+"="+fp1, "--relay", addr2+"="+fp2)
	coordAddr := coord.line(t, "warren-coord listening on")

	echoPort := echoServer(t)
	webPort, _ := blobServer(t, 1024) // and "hello from b" at /hello
	socksA := freePort(t)
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	nodeA := startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateA, "--name", "a", "--listen", "127.0.0.1:0",
		"--no-direct", "--socks", fmt.Sprintf("127.0.0.1:%d", socksA))
	startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateB, "--name", "b", "--listen", "127.0.0.1:0",
		"--no-direct", "--socks", "", "--expose", fmt.Sprintf("tcp:%d", echoPort), "--expose", fmt.Sprintf("tcp:%d", webPort))
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "lan", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "lan", "--state", stateB, "--password", "pw")
	waitPeerPath(t, stateA, "b", "relay", addr1)
	waitPeerPath(t, stateB, "a", "relay", addr1)

	// A long-lived connection (an SSH session, say) through SOCKS, and fresh requests.
	d, err := proxy.SOCKS5("tcp", fmt.Sprintf("127.0.0.1:%d", socksA), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	session, err := d.Dial("tcp", fmt.Sprintf("b.warren:%d", echoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	lines := bufio.NewReader(session)
	echo := func(msg string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		session.SetDeadline(start.Add(within))
		if _, err := io.WriteString(session, msg+"\n"); err != nil {
			t.Fatalf("session: write: %v", err)
		}
		got, err := lines.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("session: echo of %q: %q, %v (after %v)", msg, got, err, time.Since(start))
		}
		return time.Since(start)
	}
	web := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Dial: d.Dial, DisableKeepAlives: true}}
	url := fmt.Sprintf("http://b.warren:%d/hello", webPort)
	// getAgain returns how long until a fresh GET through SOCKS succeeds.
	getAgain := func(within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var err error
		testkit.Eventually(t, within, func() bool {
			var resp *http.Response
			if resp, err = web.Get(url); err != nil {
				return false
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.TrimSpace(string(body)) == "hello from b"
		}, "no answer from b through SOCKS: %v", later(func() any { return err }))
		return time.Since(start)
	}
	echo("before", 10*time.Second)
	getAgain(10 * time.Second)

	// kill stops a relay as a crash would and measures how long data stops.
	kill := func(p *proc, name, next string) {
		t.Helper()
		p.kill()
		e := echo("after "+name, failoverBound)
		g := getAgain(failoverBound)
		t.Logf("%s killed: the open session echoed again after %v, a fresh GET through SOCKS succeeded %v later",
			name, e.Round(time.Millisecond), g.Round(time.Millisecond))
		waitPeerPath(t, stateA, "b", "relay", next)
		waitPeerPath(t, stateB, "a", "relay", next)
	}
	kill(relay1, "relay 1", addr2)
	echo("on relay 2", 10*time.Second)
	if p := relay2.stderr.String(); !strings.Contains(p, "node logged in to the relay") {
		t.Errorf("relay 2 never logged a login:\n%s", p)
	}
	kill(relay2, "relay 2", coordAddr)
	echo("on the coord's relay", 10*time.Second)

	// Relay 1 comes back at its address: the nodes log in again (their retries back off up to 15 s)
	// and move the link back to it, the session still on it.
	start := time.Now()
	startRelay("relay1", addr1)
	waitFor(t, 40*time.Second, "both nodes back on relay 1", func() bool {
		sa, errA := cliStatus(stateA)
		sb, errB := cliStatus(stateB)
		return errA == nil && errB == nil && peerEndpoint(sa, "b") == addr1 && peerEndpoint(sb, "a") == addr1
	})
	t.Logf("relay 1 restarted: both nodes back on it after %v", time.Since(start).Round(time.Millisecond))
	echo("back on relay 1", 10*time.Second)
	getAgain(10 * time.Second)
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(nodeA.stderr.String(), "relay connection lost") },
		"node a never logged that it lost a relay")
}

// TestStandaloneRelayRefusesOne: relay 1 blocks node a's address (a runs on 127.0.0.2), so a is
// logged in to relay 2 only while b is logged in to both and prefers relay 1: the two still meet, on
// relay 2, whichever dials.
func TestStandaloneRelayRefusesOne(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	blockFile := filepath.Join(tmp, "blocklist")
	if err := os.WriteFile(blockFile, []byte("127.0.0.2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay1 := startProc(t, "warren-coord", "relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay1", "key.pem"),
		"--blocklist", blockFile)
	addr1, fp1 := relay1.line(t, "warren-coord relay listening on"), relay1.line(t, "key")
	relay2 := startProc(t, "warren-coord", "relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay2", "key.pem"))
	addr2, fp2 := relay2.line(t, "warren-coord relay listening on"), relay2.line(t, "key")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--no-relay",
		"--relay", addr1+"="+fp1, "--relay", addr2+"="+fp2)
	coordAddr := coord.line(t, "warren-coord listening on")

	webPort, _ := blobServer(t, 1024)
	socksA := freePort(t)
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateA, "--name", "a", "--listen", "127.0.0.2:0",
		"--no-direct", "--socks", fmt.Sprintf("127.0.0.1:%d", socksA))
	startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateB, "--name", "b", "--listen", "127.0.0.1:0",
		"--no-direct", "--socks", "", "--expose", fmt.Sprintf("tcp:%d", webPort))
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	waitFor(t, 10*time.Second, "a refused by relay 1, b logged in to it", func() bool {
		return strings.HasPrefix(relayLogin(t, stateA, addr1), "refused: ") && relayLogin(t, stateB, addr1) == "logged in"
	})
	warren(t, true, "network", "create", "lan", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "lan", "--state", stateB, "--password", "pw")
	waitPeerPath(t, stateA, "b", "relay", addr2)
	waitPeerPath(t, stateB, "a", "relay", addr2)
	body, _ := fetch(t, socksHTTP(t, fmt.Sprintf("127.0.0.1:%d", socksA)), fmt.Sprintf("http://b.warren:%d/hello", webPort))
	if strings.TrimSpace(string(body)) != "hello from b" {
		t.Fatalf("GET through relay 2: %q", body)
	}
}
