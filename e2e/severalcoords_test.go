package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/internal/testkit/pgtest"
)

// TestSeveralCoords runs two warren-coord processes on one PostgreSQL database, sharing one
// identity key: node a logs in to coord 1, node b to coord 2. They see each other and carry data;
// a join, a rule change and a kick made through one coord reach the node on the other within a
// second (measured); after the coords' LISTEN connections are killed nothing is lost; and when
// coord 2 dies, a sees b offline once coord 2's heartbeat is stale, while c, which has both coords
// in its list, moves to coord 1 and is online at a again.
func TestSeveralCoords(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL and the binaries")
	}
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	tmp := t.TempDir()
	data1, data2 := filepath.Join(tmp, "coord1"), filepath.Join(tmp, "coord2")
	c1 := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data1, "--db", db, "--coord-id", "one", "--log-level", "debug")
	addr1, fp := c1.line(t, "warren-coord listening on"), c1.line(t, "key")
	// The shared identity: coord 2 gets a copy of coord 1's key file, so nodes pin one key.
	key, err := os.ReadFile(filepath.Join(data1, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(data2, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data2, "key.pem"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data2, "--db", db, "--coord-id", "two", "--log-level", "debug")
	addr2, fp2 := c2.line(t, "warren-coord listening on"), c2.line(t, "key")
	if fp2 != fp {
		t.Fatalf("coord 2 has key %s, coord 1 %s", fp2, fp)
	}

	port := greeter(t)
	up := func(name, addr string, extra ...string) string {
		state := filepath.Join(tmp, name)
		startProc(t, "warren", append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0"}, extra...)...)
		waitLoggedIn(t, state)
		return state
	}
	a := up("a", addr1)
	b := up("b", addr2, "--expose", fmt.Sprintf("tcp:%d", port))
	warren(t, true, "network", "create", "lan", "--state", a, "--password", "pw")

	// Join through coord 2: a, on coord 1, sees b online, and b sees a.
	warren(t, true, "network", "join", "lan", "--state", b, "--password", "pw")
	joined := time.Now()
	seen := waitPeer(t, a, "b", "a sees b (joined through the other coord) online", 30*time.Second, online).Sub(joined)
	waitPeer(t, b, "a", "b sees a online", 30*time.Second, online)
	t.Logf("fan-out: join on coord 2 → peer on coord 1: %v", seen)

	// They carry data: a reaches b's exposed port through a tunnel neither coord relays.
	socksA := statusOf(t, a).Self.SOCKS
	testkit.Eventually(t, 60*time.Second, func() bool { return reaches(socksA, "b.warren", port) }, "a never reached b's exposed port")
	waitDirect(t, a, "b")

	// A rule change on coord 1 reaches b, which enforces it: b takes nothing from a any more.
	rules := filepath.Join(tmp, "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules": [{"from": ["b"], "to": ["a"], "ports": ["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	set := time.Now() // before the request: the rule may be in force by the time the CLI returns
	warren(t, true, "network", "acl", "set", "lan", rules, "--state", a)
	testkit.Eventually(t, 30*time.Second, func() bool { return !reaches(socksA, "b.warren", port) }, "b still takes a's connections after the rule change")
	ruled := time.Since(set)
	t.Logf("fan-out: rule change on coord 1 → enforced by the peer on coord 2: %v from the request (polled)", ruled)
	warren(t, true, "network", "acl", "clear", "lan", "--state", a)
	testkit.Eventually(t, 30*time.Second, func() bool { return reaches(socksA, "b.warren", port) }, "a never reached b again after the rules were cleared")

	// The LISTEN connections die (as in a PostgreSQL restart or a network cut); a kick right after
	// still reaches b: each coord reads the events after the last it handled once it listens again.
	out, err := pg.Exec(dbName(db), "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'warren-listen'")
	if err != nil || out != "2" {
		t.Fatalf("terminated %q LISTEN connections: %v", out, err)
	}
	warren(t, true, "network", "kick", "lan", "b", "--state", a)
	kicked := time.Now()
	gone := waitPeer(t, b, "a", "b, kicked through the other coord, drops a", 30*time.Second, absent).Sub(kicked)
	t.Logf("fan-out: kick on coord 1 (LISTEN connections just killed) → kicked node on coord 2: %v", gone)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(c2.stderr.String(), "cluster: listening for events") &&
			strings.Count(c2.stderr.String(), "cluster: listening for events") >= 2
	}, "coord 2 never listened again")
	if strings.Contains(c2.stderr.String(), "caught up after reconnecting") {
		t.Log("coord 2 caught up by event ID after reconnecting")
	}

	// b joins again, and c, which knows both coords (coord 2 first), joins too; then coord 2 dies
	// without a word: a sees b (which knows only coord 2) offline once coord 2's heartbeat is stale
	// (10s), and c moves to coord 1, where a sees it online again.
	warren(t, true, "network", "join", "lan", "--state", b, "--password", "pw")
	waitPeer(t, a, "b", "a sees b back", 30*time.Second, online)
	c := up("c", addr2+","+addr1)
	if st := statusOf(t, c); st.Coord.Addr != addr2 {
		t.Fatalf("c logged in to %s, want coord 2 (%s) first", st.Coord.Addr, addr2)
	}
	warren(t, true, "network", "join", "lan", "--state", c, "--password", "pw")
	waitPeer(t, a, "c", "a sees c online", 30*time.Second, online)
	c2.kill()
	died := time.Now()
	// c notices the loss after its idle timeout (6–8 s) and tries coord 1 next at once.
	testkit.Eventually(t, 60*time.Second, func() bool {
		st := statusOf(t, c)
		return st.Coord.Connected && st.Coord.Addr == addr1
	}, "c never moved to coord 1")
	movedAt := time.Since(died)
	moved := waitPeer(t, a, "c", "a sees c online after it moved to coord 1", 30*time.Second, online).Sub(died)
	waitPeer(t, c, "a", "c sees a after the move", 30*time.Second, online)
	t.Logf("coord 2 SIGKILLed → c (coord list) logged in to coord 1 after %v, online at a after %v", movedAt, moved)
	if movedAt > 10*time.Second {
		t.Logf("note: c took over 10 s to fail over (the issue's goal; a loaded machine can exceed it)")
	}
	off := waitPeer(t, a, "b", "a sees b offline after its coord died", 60*time.Second, offline).Sub(died)
	t.Logf("coord 2 SIGKILLed → its node offline at coord 1's peers: %v (heartbeat timeout 10s)", off)
	// Operator commands on a coord's data directory reach the shared database, with the server
	// running (admin socket) and without (DIR/db.url).
	if nodes := nodesByName(t, data1); len(nodes) != 3 {
		t.Errorf("nodes through coord 1's admin socket: %+v", nodes)
	}
	if nodes := nodesByName(t, data2); len(nodes) != 3 || nodes["b"].Name != "b" {
		t.Errorf("nodes on coord 2's data directory, coord 2 not running: %+v", nodes)
	}
	for _, d := range []struct {
		what string
		d    time.Duration
	}{{"join", seen}, {"rule change", ruled}, {"kick", gone}} {
		// The goal is 1s; the bound leaves room for a loaded 2-core machine and the status polling.
		if d.d > 5*time.Second {
			t.Errorf("%s took %v to reach the other coord's node", d.what, d.d)
		}
	}
	if off > 30*time.Second {
		t.Errorf("a dead coord's node went offline after %v", off)
	}
}

// dbName returns the database name of a postgres:// URL.
func dbName(url string) string {
	name := url[strings.LastIndex(url, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	return name
}
