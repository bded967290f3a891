package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestCoordPinnedAddr: the key travels with the address. warren-coord prints a --coord value that
// carries its key; a node given it logs in without trusting on first use, a node given the address
// with another key refuses the server before sending anything, and a node that trusts on first use
// says so plainly.
func TestCoordPinnedAddr(t *testing.T) {
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	join := coord.line(t, "join with: warren up --coord")
	if join != addr+"#"+fp {
		t.Fatalf("join line names %q, want %q", join, addr+"#"+fp)
	}

	pinned := filepath.Join(tmp, "pinned")
	p := startProc(t, "warren", "up", "--coord", join, "--state", pinned, "--name", "pinned", "--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0")
	waitLoggedIn(t, pinned)
	if got := statusOf(t, pinned).Coord.Key; got != fp {
		t.Errorf("pinned key %q, want %q", got, fp)
	}
	if strings.Contains(p.stderr.String(), "first use") {
		t.Errorf("a node given the key trusted on first use:\n%s", p.stderr.String())
	}

	const wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	out, code := warrenRun(t, "up", "--coord", addr+"#"+wrong, "--state", filepath.Join(tmp, "wrong"), "--name", "wrong",
		"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0", "--coord-timeout", "5s")
	if code == 0 || !strings.Contains(out, "does not match the pinned key") {
		t.Errorf("a node pinning another key: status %d:\n%s", code, out)
	}

	tofu := filepath.Join(tmp, "tofu")
	p = startProc(t, "warren", "up", "--coord", addr, "--state", tofu, "--name", "tofu", "--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0")
	waitLoggedIn(t, tofu)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), "trusting the coordination server's key on first use")
	}, "no first-use warning")
}
