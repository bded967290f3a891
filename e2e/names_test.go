package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestACLNameTakeover replays issue 13's attacks with the binaries. (a) The owner lets alice reach
// bob:P; mallory restarts with --name alice: she stays mallory, gets nothing, and the roster has
// one alice. (b) mallory tries to become bob: neither a join under that name nor a rename gets it,
// and bob.warren stays the real bob. Renames are explicit: alice renames and keeps her grant,
// mallory then takes the freed name alice and still gets nothing.
func TestACLNameTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	port := greeter(t)

	up := func(dir, name string, extra ...string) (string, *proc) {
		state := filepath.Join(tmp, dir)
		p := startProc(t, "warren", append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0"}, extra...)...)
		waitLoggedIn(t, state)
		return state, p
	}
	bob, _ := up("bob", "bob", "--expose", fmt.Sprintf("tcp:%d", port))
	warren(t, true, "network", "create", "lan", "--open", "--state", bob)
	alice, _ := up("alice", "alice")
	mallory, malloryProc := up("mallory", "mallory")
	for _, s := range []string{alice, mallory} {
		warren(t, true, "network", "join", "lan", "--state", s)
	}
	for _, name := range []string{"alice", "mallory"} {
		waitPeer(t, bob, name, name+" online at bob", 20*time.Second, online)
	}
	rules := filepath.Join(tmp, "rules.json")
	os.WriteFile(rules, []byte(fmt.Sprintf(`{"rules":[{"from":["alice"],"to":["bob"],"ports":["%d/tcp"]}]}`, port)), 0o600)
	warren(t, true, "network", "acl", "set", "lan", rules, "--state", bob)

	expect := func(what string, state string, want bool) {
		t.Helper()
		testkit.Eventually(t, 30*time.Second, func() bool { return reaches(statusOf(t, state).Self.SOCKS, "bob.warren", port) == want },
			"%s: reach=%v, want %v", what, !want, want)
	}
	expect("alice → bob", alice, true)
	expect("mallory → bob", mallory, false)

	// (a) mallory comes back as alice.
	malloryProc.stop()
	mallory, malloryProc = up("mallory", "alice")
	if name := statusOf(t, mallory).Self.Name; name != "mallory" {
		t.Fatalf("mallory restarted with --name alice and is now %q", name)
	}
	expect("mallory, restarted as alice → bob", mallory, false)
	members := warren(t, true, "network", "members", "lan", "--state", bob)
	if n := strings.Count(members, "alice"); n != 1 {
		t.Errorf("%d alices in the roster:\n%s", n, members)
	}

	// (b) mallory tries to be bob: by rename, and with a fresh key named bob.
	if out := warren(t, false, "rename", "bob", "--state", mallory); !strings.Contains(out, `already named "bob"`) {
		t.Errorf("rename to bob: %s", out)
	}
	fake, _ := up("fake-bob", "bob")
	if out := warren(t, false, "network", "join", "lan", "--state", fake); !strings.Contains(out, `already named "bob"`) {
		t.Errorf("a second bob joining: %s", out)
	}
	st, bobSelf := statusOf(t, alice), statusOf(t, bob).Self
	if p, ok := peerNamed(st, "bob"); !ok || len(p.IPs) == 0 || p.IPs[0] != bobSelf.IPs[0] {
		t.Errorf("alice's bob is %+v, want the real bob at %v", p, bobSelf.IPs)
	}

	// Explicit renames: the grant follows alice's key; the freed name gives mallory nothing.
	if out := warren(t, true, "rename", "alice2", "--state", alice); !strings.Contains(out, "now alice2") {
		t.Errorf("rename: %s", out)
	}
	waitPeer(t, bob, "alice2", "alice's new name at bob", 10*time.Second, online)
	warren(t, true, "rename", "alice", "--state", mallory)
	waitPeer(t, bob, "alice", "mallory as alice at bob", 10*time.Second, online)
	expect("alice2 → bob", alice, true)
	expect("mallory, renamed alice → bob", mallory, false)
	if out := warren(t, true, "network", "acl", "show", "lan", "--state", bob); !strings.Contains(out, "alice2 -> bob") {
		t.Errorf("acl show after the renames: %s", out)
	}
}
