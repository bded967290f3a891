package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/internal/testkit"
)

// coordCmd runs one warren-coord operator command and returns its stdout; it fails the test if the
// exit status is not wantOK.
func coordCmd(t *testing.T, wantOK bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin(t, "warren-coord"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if (err == nil) != wantOK {
		t.Fatalf("warren-coord %s: err=%v, want ok=%v\n%s%s", strings.Join(args, " "), err, wantOK, out, stderr.String())
	}
	return string(out) + stderr.String()
}

// coordJSON runs a listing with --json and decodes it into v.
func coordJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := coordCmd(t, true, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("warren-coord %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func nodesByName(t *testing.T, data string) map[string]operatorapi.Node {
	t.Helper()
	var nodes []operatorapi.Node
	coordJSON(t, &nodes, "nodes", "--data", data)
	m := make(map[string]operatorapi.Node)
	for _, n := range nodes {
		m[n.Name] = n
	}
	return m
}

// TestOperatorCommands drives the operator's commands against a running warren-coord with three
// online nodes (bravo connects from 127.0.0.2), then with the server stopped:
//   - nodes/networks --json through the admin socket show who is online, from where, since when;
//   - 'node remove' makes the node vanish from its peer's 'warren status' within seconds;
//   - 'block add' of bravo's address disconnects it and its logins are refused from then on;
//   - with the server stopped the same listings come from the data directory, online unknown;
//   - after a kill -9 the stale socket does not confuse the commands or the next server;
//   - 'audit --json' lists every change in order, whoever made it.
func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	t.Parallel() // mostly waiting for nodes to notice a killed server: overlaps the other long waits
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	listen := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	coord := startProc(t, "warren-coord", "--listen", listen, "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	sock := filepath.Join(data, operatorapi.SocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}

	up := func(name, from string) string {
		state := filepath.Join(tmp, name)
		startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", from+":0", "--socks", "")
		waitLoggedIn(t, state)
		return state
	}
	alpha := up("alpha", "127.0.0.1")
	bravo := up("bravo", "127.0.0.2")
	charlie := up("charlie", "127.0.0.1")
	warren(t, true, "network", "create", "lan", "--password", "pw", "--state", alpha)
	warren(t, true, "network", "join", "lan", "--password", "pw", "--state", bravo)
	warren(t, true, "network", "join", "lan", "--password", "pw", "--state", charlie)
	waitPeer(t, alpha, "bravo", "bravo online at alpha", 60*time.Second, online)
	waitPeer(t, alpha, "charlie", "charlie online at alpha", 60*time.Second, online)
	keyOut := coordCmd(t, true, "authkey", "create", "--data", data, "--network", "lan", "--tag", "ci")
	if !strings.Contains(keyOut, "warren-auth-") {
		t.Fatalf("authkey create: %s", keyOut)
	}

	// Listings through the running server.
	start := time.Now()
	nodes := nodesByName(t, data)
	t.Logf("nodes --json through the admin socket: %v", time.Since(start).Round(time.Millisecond))
	if len(nodes) != 3 {
		t.Fatalf("nodes: %+v", nodes)
	}
	for name, n := range nodes {
		wantFrom := "127.0.0.1:"
		if name == "bravo" {
			wantFrom = "127.0.0.2:"
		}
		if n.Online == nil || !*n.Online || !strings.HasPrefix(n.Observed, wantFrom) || n.OnlineSince == nil ||
			time.Since(*n.OnlineSince) > time.Minute || strings.Join(n.Networks, ",") != "lan" || len(n.IPs) != 2 || n.Key == "" ||
			!strings.HasPrefix(n.Fingerprint, "SHA256:") {
			t.Errorf("node %s: %+v", name, n)
		}
	}
	if st := statusOf(t, alpha); nodes["alpha"].Fingerprint != st.Self.Key || nodes["alpha"].IPs[0] != st.Self.IPs[0] {
		t.Errorf("alpha's own status %+v does not match the listing %+v", st.Self, nodes["alpha"])
	}
	var nets []operatorapi.Network
	coordJSON(t, &nets, "networks", "--data", data)
	if len(nets) != 1 || nets[0].Name != "lan" || nets[0].OwnerName != "alpha" || nets[0].Members != 3 || nets[0].Online == nil ||
		*nets[0].Online != 3 || !nets[0].Password {
		t.Errorf("networks: %+v", nets)
	}
	table := coordCmd(t, true, "nodes", "--data", data)
	if !strings.Contains(table, "127.0.0.2:") || strings.Contains(table, "online state unknown") {
		t.Errorf("nodes table:\n%s", table)
	}

	// node remove: gone from its peer's status within seconds; the listing no longer has it.
	start = time.Now()
	charlieKey := nodesByName(t, data)["charlie"].Key // short key, as logs and the audit log show it
	out := coordCmd(t, true, "node", "remove", "charlie", "--data", data)
	if !strings.Contains(out, "removed node charlie") || !strings.Contains(out, "disconnected") || !strings.Contains(out, "2 peer(s) told") {
		t.Errorf("node remove said:\n%s", out)
	}
	gone := waitPeer(t, alpha, "charlie", "charlie gone from alpha's status", 60*time.Second, absent)
	waitPeer(t, bravo, "charlie", "charlie gone from bravo's status", 60*time.Second, absent)
	t.Logf("node remove: gone from its peer's status %v after the command started", gone.Sub(start).Round(time.Millisecond))
	if n, ok := nodesByName(t, data)["charlie"]; ok && len(n.Networks) != 0 {
		t.Errorf("charlie after removal (it may log in again as a new node, but in no network): %+v", n)
	}

	// block add of bravo's address: disconnected at once, and refused when it tries again.
	start = time.Now()
	out = coordCmd(t, true, "block", "add", "127.0.0.2/32", "--comment", "test abuse", "--data", data)
	if !strings.Contains(out, "blocked 127.0.0.2/32") || !strings.Contains(out, "disconnected 1 online node(s): bravo") {
		t.Errorf("block add said:\n%s", out)
	}
	off := waitPeer(t, alpha, "bravo", "bravo offline at alpha", 60*time.Second, offline)
	t.Logf("block add: bravo offline at its peer %v after the command started", off.Sub(start).Round(time.Millisecond))
	var blocks operatorapi.Blocks
	coordJSON(t, &blocks, "blocks", "--data", data)
	if blocks.File != filepath.Join(data, "blocklist") || len(blocks.Entries) != 1 || blocks.Entries[0].Prefix != "127.0.0.2/32" ||
		blocks.Entries[0].Comment != "test abuse" {
		t.Errorf("blocks: %+v", blocks)
	}
	// bravo retries (its backoff starts at a second); the coord refuses every try.
	testkit.Eventually(t, 60*time.Second, func() bool { return strings.Contains(coord.stderr.String(), "logins from this address are blocked") },
		"the coord never refused bravo's new login")
	if n := nodesByName(t, data)["bravo"]; n.Online == nil || *n.Online {
		t.Errorf("bravo after the block: %+v", n)
	}
	if statusOf(t, bravo).Coord.Connected {
		t.Error("bravo says it is connected to the coord")
	}

	var keys []operatorapi.AuthKey
	coordJSON(t, &keys, "authkey", "list", "--data", data)
	if len(keys) != 1 || keys[0].Tag != "ci" || keys[0].State != "valid" {
		t.Fatalf("authkey list: %+v", keys)
	}
	coordCmd(t, true, "authkey", "revoke", keys[0].ID, "--data", data)

	// The server stops: the socket goes; the same listings come from the data directory.
	coord.stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("admin socket left after the server stopped: %v", err)
	}
	nodes = nodesByName(t, data)
	if len(nodes) < 2 || nodes["alpha"].Online != nil || nodes["alpha"].Observed != "" || strings.Join(nodes["alpha"].Networks, ",") != "lan" ||
		nodes["alpha"].IPs[0] != statusOf(t, alpha).Self.IPs[0] {
		t.Errorf("nodes offline: %+v", nodes)
	}
	coordJSON(t, &nets, "networks", "--data", data)
	if len(nets) != 1 || nets[0].Members != 2 || nets[0].Online != nil {
		t.Errorf("networks offline: %+v", nets)
	}
	if table := coordCmd(t, true, "nodes", "--data", data); !strings.Contains(table, "online state unknown") {
		t.Errorf("offline nodes table does not say online state is unknown:\n%s", table)
	}
	// A change on the data directory, applied by the next server at start.
	out = coordCmd(t, true, "block", "remove", "127.0.0.2", "--data", data)
	if !strings.Contains(out, "unblocked 127.0.0.2/32") || !strings.Contains(out, "no server is running") {
		t.Errorf("offline block remove said:\n%s", out)
	}

	// Restart; kill -9 leaves a stale socket, which neither the commands nor the next server mind.
	coord = startProc(t, "warren-coord", "--listen", listen, "--data", data)
	coord.line(t, "warren-coord listening on")
	waitPeer(t, alpha, "bravo", "bravo back after the unblock", 40*time.Second, online)
	coord.kill()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket after kill -9: %v", err)
	}
	if n := nodesByName(t, data)["alpha"]; n.Online != nil {
		t.Errorf("with a stale socket the listing claims online state: %+v", n)
	}
	coord = startProc(t, "warren-coord", "--listen", listen, "--data", data)
	coord.line(t, "warren-coord listening on")
	if n := nodesByName(t, data)["alpha"]; n.Online == nil {
		t.Errorf("after a restart over a stale socket the listing is not live: %+v", n)
	}

	// Owner actions by the operator, on any network: a kick reaches the kicked node's peer, a lock
	// refuses the next join; with no server running they are refused (the members must be told).
	// (alpha notices the killed server only after its idle timeout, 45-67 s: wait until the new one
	// has it.)
	var listed map[string]operatorapi.Node
	testkit.Eventually(t, 90*time.Second, func() bool {
		listed = nodesByName(t, data)
		a, b := listed["alpha"], listed["bravo"]
		return a.Online != nil && *a.Online && b.Online != nil && *b.Online
	}, "alpha and bravo not both logged in to the restarted server: %+v", later(func() any { return listed }))
	start = time.Now()
	if out := coordCmd(t, true, "network", "kick", "lan", "bravo", "--data", data); !strings.Contains(out, "kick bravo done") {
		t.Errorf("network kick said:\n%s", out)
	}
	kicked := waitPeer(t, alpha, "bravo", "bravo gone from alpha after the operator's kick", 60*time.Second, absent)
	t.Logf("operator kick: gone from its peer's status %v after the command started", kicked.Sub(start).Round(time.Millisecond))
	coordCmd(t, true, "network", "lock", "lan", "--data", data)
	if out := warren(t, false, "network", "join", "lan", "--password", "pw", "--state", bravo); !strings.Contains(out, "locked") {
		t.Errorf("join of a locked network said:\n%s", out)
	}
	if out := coordCmd(t, false, "network", "kick", "lan", "nobody", "--data", data); !strings.Contains(out, "nobody") {
		t.Errorf("kick of an unknown node said:\n%s", out)
	}

	// The audit log: every change, in order, by the operator's uid, whether the server ran or not.
	var audit []operatorapi.AuditEntry
	coordJSON(t, &audit, "audit", "--data", data)
	var got []string
	for i, e := range audit {
		got = append(got, e.Action+" "+e.Target)
		if e.Actor != fmt.Sprintf("operator uid=%d", os.Getuid()) || (i > 0 && e.Time.Before(audit[i-1].Time)) || time.Since(e.Time) > 5*time.Minute {
			t.Errorf("audit entry %d: %+v", i, e)
		}
	}
	want := []string{"authkey.create " + keys[0].ID, "node.remove charlie(" + charlieKey + ")", "block.add 127.0.0.2/32", "authkey.revoke " + keys[0].ID, "block.remove 127.0.0.2/32",
		"network.kick lan", "network.lock lan"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(audit[2].Detail, "test abuse") || !strings.Contains(audit[2].Detail, "bravo") {
		t.Errorf("block.add detail: %q", audit[2].Detail)
	}
	var recent []operatorapi.AuditEntry
	coordJSON(t, &recent, "audit", "--data", data, "--limit", "2")
	if len(recent) != 2 || recent[1].Action != "network.lock" {
		t.Errorf("audit --limit 2: %+v", recent)
	}
	coordJSON(t, &recent, "audit", "--data", data, "--since", "1h")
	if len(recent) != len(want) {
		t.Errorf("audit --since 1h: %d entries", len(recent))
	}
	if table := coordCmd(t, true, "audit", "--data", data); !strings.Contains(table, "node.remove") {
		t.Errorf("audit table:\n%s", table)
	}
}
