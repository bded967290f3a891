package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
)

// TestCoordRestartUnderLoad: 200 nodes (real node.Node instances in this process, without proxies;
// in networks of four, so each has three peers) are logged in to one warren-coord process. The coord
// is SIGKILLed and started again on the same port with the same data, and later restarted with
// SIGTERM. Each time, within 30 s of the moment the nodes can notice (SIGTERM: at once; SIGKILL:
// their control connection's idle timeout) every node must be logged in again and see its three
// peers online (resynced). The logins per second, from the coord's own log, show how the nodes spread
// out: after SIGKILL by when each one's control connection times out, after SIGTERM only by their
// backoff jitter.
func TestCoordRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 200 nodes against the coord binary")
	}
	if raceEnabled {
		t.Skip("a load test: its timings mean nothing under the race detector; `make test` runs it without -race (make load)")
	}
	const nodes, group = 200, 4
	tmp := t.TempDir()
	coordAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	coordArgs := []string{"--listen", coordAddr, "--data", filepath.Join(tmp, "coord"), "--log-json"}
	coord := startProc(t, "warren-coord", coordArgs...)
	coord.line(t, "warren-coord listening on")
	c := &testCoord{addr: coordAddr, key: coord.line(t, "key")}

	// Start the swarm, a few nodes at a time; their logs are dropped (the coord's tell the story). A
	// failed start ends its goroutine (t.Fatal) and the test right after.
	start := time.Now()
	swarm := make([]*testNode, nodes)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range swarm {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			swarm[i] = startQuietNode(t, c, fmt.Sprintf("n%03d", i))
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, n := range swarm {
		op := "join"
		if i%group == 0 {
			op = "create"
		}
		n.network(t, op, fmt.Sprintf("g%02d", i/group), "")
	}
	waitResynced(t, swarm, group-1, 60*time.Second)
	t.Logf("%d nodes logged in, in networks of %d, every peer online, after %v", nodes, group, time.Since(start).Round(time.Millisecond))

	// SIGKILL: the nodes notice when their control connection times out, 45 s after the last packet
	// or the first keep-alive sent after it (every 22 s: control.Timers), so 45-67 s after the kill,
	// each at its own moment (a bare keep-alive is too small for the restarted coord to answer with a
	// stateless reset); they come back after their first backoff (1 s ±25%).
	coord = restartCoord(t, coord, true, coordArgs, swarm, group-1)
	// SIGTERM: the coord closes every connection, so every node notices at once and only the backoff
	// jitter spreads them: the hardest burst.
	restartCoord(t, coord, false, coordArgs, swarm, group-1)
}

// restartCoord ends the coord (SIGKILL if kill, else SIGTERM) and starts it again with the same
// arguments. Within 30 s of the moment the nodes can notice (after a SIGKILL the idle timeout of
// their control connections, which started at most a keep-alive before the kill; after a SIGTERM at
// once) the new process must have logged in every node of the swarm and every node must see its
// peers online again (resynced: fresh peer maps, then deltas). It logs how long that took and the
// logins per second from the coord's log.
func restartCoord(t *testing.T, coord *proc, kill bool, args []string, swarm []*testNode, peers int) *proc {
	t.Helper()
	how := "SIGTERM"
	stopped := time.Now()
	if kill {
		how = "SIGKILL"
		coord.kill()
	} else {
		coord.stop()
	}
	coord = startProc(t, "warren-coord", args...)
	coord.line(t, "warren-coord listening on")
	restarted := time.Now()
	deadline := restarted.Add(30 * time.Second)
	if kill {
		idle, keepAlive := control.Timers(1)
		deadline = deadline.Add(idle + keepAlive)
	}
	testkit.Eventually(t, time.Until(deadline), func() bool { return logins(coord.stderr.String()) >= len(swarm) },
		"after a restart (%s) the coord has logged in %v of %d nodes", how, later(func() any {
			logLoginRate(t, coord.stderr.String(), restarted)
			return logins(coord.stderr.String())
		}), len(swarm))
	loggedIn := time.Since(restarted)
	waitResynced(t, swarm, peers, time.Until(deadline))
	t.Logf("%s, restarted %v later: all %d nodes logged in again %v and resynced %v after the restart", how,
		restarted.Sub(stopped).Round(time.Millisecond), len(swarm), loggedIn.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	logLoginRate(t, coord.stderr.String(), restarted)
	return coord
}

// logins counts the distinct nodes a coord's JSON log says logged in.
func logins(log string) int {
	seen := map[string]bool{}
	for _, e := range loginLines(log) {
		seen[e.Node] = true
	}
	return len(seen)
}

type loginLine struct {
	Msg  string    `json:"@message"`
	At   time.Time `json:"@timestamp"`
	Node string    `json:"node"`
}

// loginLines returns the "node logged in" lines of a coord's hclog JSON log.
func loginLines(log string) []loginLine {
	var out []loginLine
	for _, line := range strings.Split(log, "\n") {
		var e loginLine
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "node logged in" {
			out = append(out, e)
		}
	}
	return out
}

// startQuietNode starts a node without a proxy whose logs go nowhere.
func startQuietNode(t *testing.T, c *testCoord, name string) *testNode {
	return startNodeWith(t, c, name, func(cfg *node.Config) {
		cfg.SOCKS = ""
		cfg.Logger = hclog.NewNullLogger()
	})
}

// waitResynced waits until every node is connected to the coord and sees peers peers, all online;
// it returns how long that took and fails the test after limit.
func waitResynced(t *testing.T, swarm []*testNode, peers int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	behind, example := 0, ""
	testkit.Eventually(t, limit, func() bool {
		behind, example = 0, ""
		for _, n := range swarm {
			st := n.Status()
			ok := st.Coord.Connected && len(st.Peers) == peers
			for _, p := range st.Peers {
				ok = ok && p.Online
			}
			if !ok {
				if behind++; example == "" {
					example = fmt.Sprintf("%s: coord connected %v, peers %+v", n.name, st.Coord.Connected, st.Peers)
				}
			}
		}
		return behind == 0
	}, "%v of %d nodes not resynced, e.g. %v", later(func() any { return behind }), len(swarm), later(func() any { return example }))
	return time.Since(start)
}

// logLoginRate logs the coord's "node logged in" lines (hclog JSON) per second since since.
func logLoginRate(t *testing.T, log string, since time.Time) {
	t.Helper()
	var buckets []int
	for _, e := range loginLines(log) {
		s := max(0, int(e.At.Sub(since)/time.Second))
		for len(buckets) <= s {
			buckets = append(buckets, 0)
		}
		buckets[s]++
	}
	var b strings.Builder
	total, peak := 0, 0
	for s, n := range buckets {
		total += n
		peak = max(peak, n)
		if n > 0 {
			fmt.Fprintf(&b, "\n  %3d-%3d s  %4d  %s", s, s+1, n, strings.Repeat("#", (n+1)/2))
		}
	}
	t.Logf("logins per second after the restart (%d in all, peak %d/s):%s", total, peak, b.String())
}
