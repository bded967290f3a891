package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestLoginRateFlags: warren-coord's per-address login limit, set on its command line, turns away
// a node beyond the burst with a reason the node logs, and lets it in once the bucket refills. It
// runs in network namespaces: logins from loopback are exempt from the per-address limit.
func TestLoginRateFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	needTool(t, "ip")
	t.Parallel() // mostly waiting for the limit's bucket to refill: overlaps the other long waits
	nsA, nsB := netnsPair(t)
	tmp := t.TempDir()
	coord := startNSProc(t, nsA, "warren-coord", "--listen", "10.99.0.1:0", "--data", filepath.Join(tmp, "coord"),
		"--login-rate-ip", "0.05", "--login-burst-ip", "2") // a token every 20 s: c asks long before the next
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	up := func(name string) *proc {
		return startNSProc(t, nsB, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, name),
			"--name", name, "--listen", "10.99.0.2:0", "--socks", "")
	}
	for _, name := range []string{"a", "b"} { // the burst
		up(name)
		waitLoggedIn(t, filepath.Join(tmp, name))
	}
	start := time.Now()
	c := up("c")
	testkit.Eventually(t, 60*time.Second, func() bool { return strings.Contains(c.stderr.String(), "too many logins from this address") },
		"the third node was not told it is over the limit:\n%v", later(func() any { return c.stderr.String() }))
	waitLoggedIn(t, filepath.Join(tmp, "c")) // a token every 20 s; the node retries with backoff (at most 12.5 s)
	t.Logf("third login from one address: refused, then in after %v", time.Since(start).Round(time.Millisecond))
}
