package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
	"github.com/warren-net/warren/node/localapi"
)

// warrenRun runs one CLI command and returns its combined output and exit status.
func warrenRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin(t, "warren"), args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("warren %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// adminNode is a `warren up` process for the administration test.
type adminNode struct {
	name, state, socks string
}

func (n adminNode) net(t *testing.T, wantStatus int, wantText string, args ...string) string {
	t.Helper()
	out, code := warrenRun(t, append(append([]string{"network"}, args...), "--state", n.state)...)
	if code != wantStatus || !strings.Contains(out, wantText) {
		t.Fatalf("%s: warren network %s: status %d, want %d with %q:\n%s", n.name, strings.Join(args, " "), code, wantStatus, wantText, out)
	}
	return out
}

func (n adminNode) members(t *testing.T, op, network string) map[string]localapi.Member {
	t.Helper()
	var ms []localapi.Member
	if err := json.Unmarshal([]byte(n.net(t, 0, "", op, network, "--json")), &ms); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]localapi.Member)
	for _, m := range ms {
		out[m.Name] = m
	}
	return out
}

// TestNetworkAdministration drives the owner's controls with the binaries: a join to a network
// that needs approval waits (exit status 3) until the owner approves it; non-owners are refused;
// a kicked node loses its tunnel to its former peers within seconds (an open proxied connection
// breaks, a new fetch fails, the peer's status no longer lists it) but keeps a peer it shares
// another network with; a banned node cannot ask to join until unbanned; a locked network takes
// no one; a rotated password refuses the old one; ownership moves; the per-network member limit
// (a warren-coord flag) holds; a deleted network's members lose each other.
func TestNetworkAdministration(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--max-nodes-per-network", "3")
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	echoPort := echoServer(t)
	nodes := map[string]adminNode{}
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		n := adminNode{name: name, state: filepath.Join(tmp, name)}
		args := []string{"up", "--coord", addr, "--coord-key", fp, "--state", n.state, "--name", name, "--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0"}
		if name == "alice" {
			args = append(args, "--expose", fmt.Sprintf("tcp:%d", echoPort))
		}
		startProc(t, "warren", args...)
		nodes[name] = n
	}
	for name, n := range nodes {
		waitLoggedIn(t, n.state)
		n.socks = statusOf(t, n.state).Self.SOCKS
		nodes[name] = n
	}
	alice, bob, carol, dave := nodes["alice"], nodes["bob"], nodes["carol"], nodes["dave"]

	// Approval.
	alice.net(t, 0, `created network "lan"`, "create", "lan", "--approval")
	bob.net(t, 3, "awaits the owner's approval", "join", "lan")
	if p := alice.members(t, "pending", "lan"); p["bob"].State != "pending" || len(p) != 1 {
		t.Fatalf("pending: %+v", p)
	}
	bob.net(t, 1, "only the owner", "approve", "lan", "bob")
	alice.net(t, 0, "approved bob", "approve", "lan", "bob")
	waitPeer(t, bob.state, "alice", "bob sees alice once approved", 60*time.Second, online)
	waitPeer(t, alice.state, "bob", "alice sees bob once approved", 60*time.Second, online)
	if nets := statusOf(t, bob.state).Self.Networks; !slices.Equal(nets, []string{"lan"}) {
		t.Errorf("bob's networks after approval: %v", nets)
	}
	carol.net(t, 3, "awaits", "join", "lan")
	alice.net(t, 0, "approved carol", "approve", "lan", "carol")
	m := alice.members(t, "members", "lan")
	if !m["alice"].Owner || m["alice"].State != "member" || m["bob"].State != "member" || !m["bob"].Online || len(m["bob"].IPs) != 2 {
		t.Errorf("members: %+v", m)
	}
	table := alice.net(t, 0, "NODE", "members", "lan")
	if !strings.Contains(table, "owner") || !strings.Contains(table, "bob") {
		t.Errorf("members table:\n%s", table)
	}
	// bob and carol also share a second network.
	carol.net(t, 1, "--open to make it open on purpose", "create", "game") // closed by default
	carol.net(t, 0, "created", "create", "game", "--open")
	bob.net(t, 0, "joined", "join", "game")

	// Kick: bob holds a proxied connection to alice's exposed echo port.
	waitDirect(t, bob.state, "alice")
	d, _ := proxy.SOCKS5("tcp", bob.socks, nil, &net.Dialer{Timeout: 5 * time.Second})
	held, err := d.Dial("tcp", fmt.Sprintf("alice.warren:%d", echoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echoLine(held, "before the kick"); err != nil {
		t.Fatal(err)
	}
	bob.net(t, 1, "only the owner", "kick", "lan", "carol")
	kicked := time.Now()
	alice.net(t, 0, "kicked bob", "kick", "lan", "bob")
	i := 0
	testkit.Eventually(t, 60*time.Second, func() bool { i++; return echoLine(held, fmt.Sprintf("after the kick %d", i)) != nil },
		"bob's proxied connection to alice survived the kick")
	cut := time.Since(kicked)
	gone := waitPeer(t, alice.state, "bob", "alice's status drops bob", 60*time.Second, absent).Sub(kicked)
	t.Logf("kick → bob's open tunnel to alice broken: %v; → alice's status without bob: %v", cut, gone)
	if _, err := socksGet(t, bob.socks, fmt.Sprintf("http://alice.warren:%d/", echoPort)); err == nil {
		t.Error("bob fetched from alice after the kick")
	}
	if out, _ := warrenRun(t, "status", "--state", alice.state); strings.Contains(out, "bob") {
		t.Errorf("alice's status still lists bob:\n%s", out)
	}
	if p, ok := peerNamed(statusOf(t, carol.state), "bob"); !ok || !slices.Equal(p.Networks, []string{"game"}) {
		t.Errorf("carol, sharing game with bob, should still see it (only in game): %+v %v", p, ok)
	}
	if nets := statusOf(t, bob.state).Self.Networks; !slices.Equal(nets, []string{"game"}) {
		t.Errorf("bob's networks after the kick: %v", nets)
	}

	// Ban, then unban.
	bob.net(t, 3, "awaits", "join", "lan")
	alice.net(t, 0, "banned bob", "ban", "lan", "bob")
	bob.net(t, 1, "banned", "join", "lan")
	if m := alice.members(t, "members", "lan"); m["bob"].State != "banned" {
		t.Errorf("bob after ban: %+v", m["bob"])
	}
	alice.net(t, 0, "lifted the ban", "unban", "lan", "bob")
	bob.net(t, 3, "awaits", "join", "lan")
	alice.net(t, 0, "denied", "deny", "lan", "bob")

	// Lock, and the member limit (3) from warren-coord's flag.
	alice.net(t, 1, "would take anyone", "approval", "lan", "off") // no password: only on purpose
	alice.net(t, 0, "joins need approval: off", "approval", "lan", "off", "--open")
	alice.net(t, 0, "locked", "lock", "lan")
	dave.net(t, 1, "locked", "join", "lan")
	alice.net(t, 0, "unlocked", "unlock", "lan")
	dave.net(t, 0, "joined", "join", "lan")
	bob.net(t, 1, "is full", "join", "lan")

	// Password rotation.
	alice.net(t, 0, "changed the password", "password", "lan", "--password", "new secret")
	dave.net(t, 0, "left", "leave", "lan")
	dave.net(t, 1, "wrong password", "join", "lan")
	dave.net(t, 0, "joined", "join", "lan", "--password", "new secret")

	// Guessing the password: after a handful of tries the server makes the guesser wait.
	limited := 0
	for try := 1; try <= 20 && limited == 0; try++ {
		out, code := warrenRun(t, "network", "join", "lan", "--password", fmt.Sprint("guess ", try), "--state", bob.state)
		switch {
		case code == 1 && strings.Contains(out, "too many password attempts; try again in"):
			limited = try
		case code != 1 || !strings.Contains(out, "wrong password"):
			t.Fatalf("guess %d: status %d:\n%s", try, code, out)
		}
	}
	if limited < 5 {
		t.Fatalf("guesser limited at try %d, want after the 5 the server allows", limited)
	}
	t.Logf("a password guesser was refused at try %d", limited)

	// Transfer.
	alice.net(t, 0, "now belongs to carol", "transfer", "lan", "carol")
	alice.net(t, 1, "only the owner", "lock", "lan")
	if m := carol.members(t, "members", "lan"); !m["carol"].Owner || m["alice"].Owner {
		t.Errorf("owner after transfer: %+v", m)
	}

	// Delete: members are told and lose each other (carol keeps bob through game).
	waitPeer(t, dave.state, "alice", "dave sees alice", 60*time.Second, present)
	carol.net(t, 0, "deleted", "delete", "lan")
	waitPeer(t, dave.state, "alice", "dave loses alice", 60*time.Second, absent)
	waitPeer(t, alice.state, "carol", "alice loses carol", 60*time.Second, absent)
	if nets := statusOf(t, dave.state).Self.Networks; len(nets) != 0 {
		t.Errorf("dave's networks after delete: %v", nets)
	}
	waitPeer(t, carol.state, "bob", "carol keeps bob", time.Second, present)
}

// echoLine writes a line and reads it back, within 10 s (a safety net: a connection that should be
// broken is reset, not slow).
func echoLine(c net.Conn, s string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, s+"\n"); err != nil {
		return err
	}
	buf := make([]byte, len(s)+1)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != s+"\n" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

// TestKickOverRelay: a kick by the server's operator (Server.Admin) tears down a relayed tunnel
// too: the kicked node's open proxied connection breaks and its peer drops it.
func TestKickOverRelay(t *testing.T) {
	c := startCoord(t, t.TempDir())
	echoPort := echoServer(t)
	relayed := func(cfg *node.Config) { cfg.NoDirect = true }
	a := startNodeWith(t, c, "alice", relayed, echoPort)
	b := startNodeWith(t, c, "bob", relayed)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	b.waitPath(t, "alice", "relay")
	held, err := b.socksDialer(t).(proxy.Dialer).Dial("tcp", fmt.Sprintf("alice.warren:%d", echoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echoLine(held, "through the relay"); err != nil {
		t.Fatal(err)
	}
	kicked := time.Now()
	if _, err := c.srv.Owner(context.Background(), coord.OwnerRequest{By: coord.Actor{Operator: true}, Op: control.OpKick,
		Network: "lan", Target: "bob"}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return echoLine(held, "after") != nil }, "the relayed connection survived the kick")
	t.Logf("relayed tunnel broken %v after the kick", time.Since(kicked))
	// Each side drops the other when its own delta arrives: bob's may come first.
	testkit.Eventually(t, 60*time.Second, func() bool { _, ok := peerNamed(a.Status(), "bob"); return !ok }, "alice still lists bob after the kick")
}
