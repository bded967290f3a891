package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
)

// greeter serves "hello from PORT" on a fresh 127.0.0.1 port and returns the port.
func greeter(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	serveEach(t, ln, func(c net.Conn) {
		fmt.Fprintf(c, "hello from %d\n", port)
		c.Close()
	})
	return port
}

// reaches reports whether a TCP connection through the SOCKS proxy at socks to host:port gets the
// greeter's line.
func reaches(socks, host string, port int) bool {
	d, err := proxy.SOCKS5("tcp", socks, nil, &net.Dialer{Timeout: 3 * time.Second})
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == fmt.Sprintf("hello from %d\n", port)
}

// TestACL drives access rules with the binaries: a server node "db" exposing two ports, a node that
// joined with an auth key tagged ci, and an untagged node (on the packet path, so its connections
// go through both netstacks instead of QUIC streams). The owner's rule list lets tag:ci reach one
// port only and the untagged node nothing; a non-owner cannot change the rules; a change on the live
// network takes effect within seconds; clearing the rules restores the default.
func TestACL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	portX, portY := greeter(t), greeter(t)

	up := func(name string, extra ...string) string {
		state := filepath.Join(tmp, name)
		startProc(t, "warren", append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0", "--log-level", "debug"}, extra...)...)
		waitLoggedIn(t, state)
		return state
	}
	db := up("db", "--expose", fmt.Sprintf("tcp:%d,tcp:%d", portX, portY))
	warren(t, true, "network", "create", "lab", "--state", db, "--open")
	out, err := sh(t, tmp, "warren-coord authkey create --data "+data+" --network lab --tag ci | tail -1")
	if err != nil {
		t.Fatalf("authkey create: %v", err)
	}
	ci := up("ci", "--authkey", strings.TrimSpace(out))
	laptop := up("laptop", "--packet-path")
	warren(t, true, "network", "join", "lab", "--state", laptop)
	for _, name := range []string{"ci", "laptop"} {
		waitPeer(t, db, name, name+" online at db", 60*time.Second, online)
	}
	socks := map[string]string{"ci": statusOf(t, ci).Self.SOCKS, "laptop": statusOf(t, laptop).Self.SOCKS}

	type want struct {
		node  string
		port  int
		reach bool
	}
	// expect waits until every case holds at once and returns how long that took.
	expect := func(what string, within time.Duration, cases ...want) time.Duration {
		t.Helper()
		start := time.Now()
		var wrong []string
		testkit.Eventually(t, within, func() bool {
			wrong = nil
			for _, c := range cases {
				if got := reaches(socks[c.node], "db.warren", c.port); got != c.reach {
					wrong = append(wrong, fmt.Sprintf("%s→db:%d reach=%v", c.node, c.port, got))
				}
			}
			return len(wrong) == 0
		}, "%s: %v", what, later(func() any { return strings.Join(wrong, ", ") }))
		t.Logf("%s: as expected after %v", what, time.Since(start).Round(time.Millisecond))
		return time.Since(start)
	}
	all := func(reach bool) []want {
		return []want{{"ci", portX, reach}, {"ci", portY, reach}, {"laptop", portX, reach}, {"laptop", portY, reach}}
	}
	expect("no rules: members reach each other's exposed ports", 15*time.Second, all(true)...)

	ruleFile := func(rules string) string {
		f := filepath.Join(t.TempDir(), "rules.json")
		if err := os.WriteFile(f, []byte(`{"rules": [`+rules+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	onlyCI := ruleFile(fmt.Sprintf(`{"from": ["tag:ci"], "to": ["db"], "ports": ["%d/tcp", "icmp"]}`, portX))

	// Only the owner may set rules; a bad file is refused with its line before anything is sent.
	if out := warren(t, false, "network", "acl", "set", "lab", onlyCI, "--state", laptop); !strings.Contains(out, "only the owner") {
		t.Errorf("a non-owner setting rules: %s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("{\"rules\": [\n  {\"from\": [\"tag:ci\"], \"to\": [\"db\"], \"ports\": [\"22/sctp\"]}\n]}"), 0o600)
	if out := warren(t, false, "network", "acl", "set", "lab", bad, "--state", db); !strings.Contains(out, "rule 1 (line 2)") {
		t.Errorf("a bad rule file: %s", out)
	}
	expect("refused changes changed nothing", 0, all(true)...)

	if out := warren(t, true, "network", "acl", "set", "lab", onlyCI, "--state", db); !strings.Contains(out, "1 rules in force") {
		t.Errorf("acl set said: %s", out)
	}
	took := expect("tag:ci reaches port X only, the untagged node nothing", 5*time.Second,
		want{"ci", portX, true}, want{"ci", portY, false}, want{"laptop", portX, false}, want{"laptop", portY, false})
	if took > 5*time.Second {
		t.Errorf("rules took %v to apply", took)
	}
	if out := warren(t, true, "network", "acl", "show", "lab", "--json", "--state", laptop); !strings.Contains(out, `"tag:ci"`) {
		t.Errorf("acl show --json by a member: %s", out)
	}
	if out := warren(t, true, "ping", "db", "-c", "1", "--state", ci); !strings.Contains(out, "1 received") && !strings.Contains(out, "time=") {
		t.Errorf("ping allowed by icmp: %s", out)
	}
	warren(t, false, "ping", "db", "-c", "1", "-W", "1s", "--state", laptop)

	// A change on the live network: the untagged node may now reach port Y (by name).
	both := ruleFile(fmt.Sprintf(`{"from": ["tag:ci"], "to": ["db"], "ports": ["%d/tcp"]}, {"from": ["laptop"], "to": ["db"], "ports": ["%d/tcp"]}`, portX, portY))
	warren(t, true, "network", "acl", "set", "lab", both, "--state", db)
	expect("changed rules take effect", 5*time.Second,
		want{"ci", portX, true}, want{"ci", portY, false}, want{"laptop", portX, false}, want{"laptop", portY, true})
	if out := warren(t, true, "network", "acl", "show", "lab", "--state", db); !strings.Contains(out, "2. laptop -> db") {
		t.Errorf("acl show: %s", out)
	}
	if n := statusOf(t, db).Stats.DroppedACL; n == 0 {
		t.Error("db's status counts no refusals")
	} else {
		t.Logf("db refused %d connections or packets by its rules", n)
	}

	// A non-owner cannot clear them either; the owner can, and the default is back.
	if out := warren(t, false, "network", "acl", "clear", "lab", "--state", ci); !strings.Contains(out, "only the owner") {
		t.Errorf("a non-owner clearing rules: %s", out)
	}
	warren(t, true, "network", "acl", "clear", "lab", "--state", db)
	expect("cleared: the default is back", 5*time.Second, all(true)...)
	if out := warren(t, true, "network", "acl", "show", "lab", "--state", ci); !strings.Contains(out, "no rules") {
		t.Errorf("acl show after clear: %s", out)
	}
}
