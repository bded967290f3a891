package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/internal/testkit"
)

// runWarrenUp runs `warren up` that is expected to fail at start, and returns its exit error and
// output. It fails the test if the command is still running after a minute.
func runWarrenUp(t *testing.T, args ...string) (error, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin(t, "warren"), append([]string{"up"}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("warren up %s still running after a minute:\n%s", strings.Join(args, " "), out)
	}
	t.Logf("warren up %s:\n%s", strings.Join(args, " "), out)
	return err, string(out)
}

// TestFailedStartLeavesNoNode: a node whose start fails leaves no record (and so no address) on the
// coord: a start with a bad auth key (refused after the coord registered the key, which then
// deletes it again) and one whose proxy port is in use (the proxy binds before the login, so the
// coord never hears of it). A node that starts fine is listed, as a control.
func TestFailedStartLeavesNoNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	common := func(name string) []string {
		return []string{"--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, name), "--name", name, "--listen", "127.0.0.1:0"}
	}

	// A bad auth key: refused, and the node the login registered is gone again.
	err, out := runWarrenUp(t, append(common("badkey"), "--socks", "", "--authkey", "warren-auth-0123456789ab-"+strings.Repeat("5a", 32))...)
	if err == nil || !strings.Contains(out, "invalid auth key") {
		t.Errorf("start with a bad auth key: err=%v, output:\n%s", err, out)
	}

	// The proxy port is taken: the start fails before anything reaches the coord.
	busy, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer busy.Close()
	err, out = runWarrenUp(t, append(common("busyport"), "--socks", busy.Addr().String())...)
	if err == nil || !strings.Contains(out, "address already in use") {
		t.Errorf("start with the proxy port in use: err=%v, output:\n%s", err, out)
	}
	if strings.Contains(out, "logged in") {
		t.Errorf("the node logged in before finding its proxy port taken:\n%s", out)
	}

	// A good node, so the listing is known to work.
	startProc(t, "warren", append([]string{"up"}, append(common("good"), "--socks", "")...)...)
	waitLoggedIn(t, filepath.Join(tmp, "good"))

	var nodes []operatorapi.Node
	coordJSON(t, &nodes, "nodes", "--data", data)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	if fmt.Sprint(names) != "[good]" {
		t.Errorf("nodes on the coord after two failed starts and a good one: %v, want [good]", names)
	}
	// The bad-key node's address was never anyone's: the good node got the first one.
	if len(nodes) == 1 && (len(nodes[0].IPs) == 0 || nodes[0].IPs[0].String() != "100.64.0.1") {
		t.Errorf("the good node got %v, want 100.64.0.1 (the refused node's address is free at once)", nodes[0].IPs)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(coord.stderr.String(), "first login refused: node deleted") },
		"the coord did not log the deletion:\n%v", later(func() any { return coord.stderr.String() }))
}
