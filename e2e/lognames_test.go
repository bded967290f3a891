package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/internal/testkit"
)

// TestLogsNamePeers: logs and the audit log name nodes as name(KEYPREFIX): a node's "link up" line
// names the peer, the coord's session and owner-action lines name the node, and the audit entry of
// an approval names the owner and the approved node.
func TestLogsNamePeers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	up := func(name string) (*proc, string) {
		state := filepath.Join(tmp, name)
		p := startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "")
		waitLoggedIn(t, state)
		return p, state
	}
	alice, stateA := up("alice")
	_, stateB := up("bob")
	warren(t, true, "network", "create", "lan", "--approval", "--state", stateA)
	out := warren(t, false, "network", "join", "lan", "--state", stateB)
	if !strings.Contains(out, "approval") {
		t.Fatalf("join of an approval network: %s", out)
	}
	warren(t, true, "network", "approve", "lan", "bob", "--state", stateA)

	nodes := nodesByName(t, data)
	aliceID := "alice(" + nodes["alice"].Key + ")"
	bobID := "bob(" + nodes["bob"].Key + ")"
	if nodes["alice"].Key == "" || nodes["bob"].Key == "" {
		t.Fatalf("nodes: %+v", nodes)
	}

	// The node: its link to bob comes up, and the line names bob.
	testkit.Eventually(t, 60*time.Second, func() bool { return hasLine(alice.stderr.String(), "link up", `peer="`+bobID+`"`) },
		"alice's log has no link-up line naming %s:\n%v", bobID, later(func() any { return alice.stderr.String() }))

	// The coord: bob's session and the owner action name the nodes.
	testkit.Eventually(t, 10*time.Second, func() bool {
		log := coord.stderr.String()
		return hasLine(log, "node logged in", `node="`+bobID+`"`) && hasLine(log, "owner action", `by="`+aliceID+`"`, `target="`+bobID+`"`)
	}, "the coord's log does not name the nodes:\n%v", later(func() any { return coord.stderr.String() }))

	// The audit log: who approved whom.
	var audit []operatorapi.AuditEntry
	coordJSON(t, &audit, "audit", "--data", data)
	found := false
	for _, e := range audit {
		if e.Action == "network.approve" {
			found = true
			if e.Actor != "node "+aliceID || e.Target != "lan" || e.Detail != bobID {
				t.Errorf("audit entry of the approval: %+v, want actor %q, target lan, detail %q", e, "node "+aliceID, bobID)
			}
		}
	}
	if !found {
		t.Errorf("no network.approve in the audit log: %+v", audit)
	}
}

// hasLine reports whether some line of log contains every one of parts.
func hasLine(log string, parts ...string) bool {
	for l := range strings.Lines(log) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}
