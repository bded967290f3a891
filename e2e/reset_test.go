package e2e

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
)

// nodeIdleTimeout is the control connection's idle timeout in node/coordclient.go: without a
// stateless reset, the node notices a dead coord only once it has heard nothing for that long.
const nodeIdleTimeout = 6 * time.Second

// TestCoordKilledStatelessReset: the coord is SIGKILLed and restarted at once on the same port and
// data directory. Its QUIC stateless reset key comes from its identity key, so it answers the node's
// first packet on the dead connection that is large enough (quic-go answers only packets over 42
// bytes: a request, not a bare keep-alive) with a stateless reset; the node drops the connection
// then and logs in again, well before its idle timeout would have ended it.
func TestCoordKilledStatelessReset(t *testing.T) {
	tmp := t.TempDir()
	coordAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	args := []string{"--listen", coordAddr, "--data", filepath.Join(tmp, "coord"), "--log-json"}
	coord := startProc(t, "warren-coord", args...)
	coord.line(t, "warren-coord listening on")
	c := &testCoord{addr: coordAddr, key: coord.line(t, "key")}
	nodeLog := &syncBuffer{}
	n := startNodeWith(t, c, "alice", func(cfg *node.Config) {
		cfg.SOCKS = ""
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "alice", Level: hclog.Info, Output: io.MultiWriter(testkit.Writer(t), nodeLog)})
	})
	waitLogins(t, coord, 1, 30*time.Second)
	// The login's exchange is over: only keep-alives flow, so that the request below is the first
	// packet the restarted coord answers with a reset. Nothing marks the end of the follow-ups (NAT
	// discovery's endpoint update comes about a second after the login): a fixed wait.
	time.Sleep(3 * time.Second)

	coord.kill()
	killed := time.Now()
	coord = startProc(t, "warren-coord", args...)
	coord.line(t, "warren-coord listening on")
	restarted := time.Since(killed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := n.Network(ctx, "create", "lan", "")
	t.Logf("a request on the dead connection failed %v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	waitLogins(t, coord, 1, 30*time.Second)
	back := time.Since(killed)
	t.Logf("coord SIGKILLed, restarted %v later; the node logged in again %v after the kill (idle timeout %v)",
		restarted.Round(time.Millisecond), back.Round(time.Millisecond), nodeIdleTimeout)
	var lost string
	for _, l := range strings.Split(nodeLog.String(), "\n") {
		if strings.Contains(l, "lost the coordination server") {
			lost = l
		}
	}
	if !strings.Contains(lost, "stateless reset") {
		t.Errorf("the node did not lose the coord to a stateless reset: %q", lost)
	}
	// The reset comes back at once, then the reconnect backoff (about 1 s).
	if back > nodeIdleTimeout {
		t.Errorf("the node logged in again %v after the kill: not before its idle timeout (%v)", back, nodeIdleTimeout)
	}
	n.network(t, "create", "lan", "") // the retry works on the restarted coord
}

// waitLogins waits until the coord's JSON log shows n distinct nodes logged in.
func waitLogins(t *testing.T, coord *proc, n int, limit time.Duration) {
	t.Helper()
	testkit.Eventually(t, limit, func() bool { return logins(coord.stderr.String()) >= n },
		"the coord logged in %v of %d nodes", later(func() any { return logins(coord.stderr.String()) }), n)
}
