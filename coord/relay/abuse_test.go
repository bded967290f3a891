package relay

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// wantClosed asserts that err is the relay's close with code and a reason containing reason.
func wantClosed(t *testing.T, what string, err error, code quic.ApplicationErrorCode, reason string) {
	t.Helper()
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != code || !strings.Contains(ae.ErrorMessage, reason) {
		t.Fatalf("%s: %v, want the relay's close with code %d and %q", what, err, code, reason)
	}
}

// bindingAnswered reports whether the relay answers a binding request from c's socket. It proves a
// negative without waiting for it: a second request follows from witness, whose address is not
// blocked, and the relay, which takes packets in the order they come, answers it after whatever it
// sent c (loopback delivers in order), so by then any answer to c has reached c's socket. c reads
// straight from its socket: a quic.Transport's reader could still be carrying it over.
func bindingAnswered(t *testing.T, s *Server, from net.IP, witness *relayClient) bool {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: from})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	witness.next(0) // its transport drops non-QUIC packets until it is first asked for one
	tx := [control.TxIDSize]byte{7}
	pc.WriteTo(control.AppendBindingRequest(nil, tx), s.Addr())
	if len(witness.relayedBefore(t)) > 0 {
		t.Log("the witness got packets before its binding answer")
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Millisecond)) // only ends the read when nothing is queued
	buf := make([]byte, 2048)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return false
		}
		if got, _, err := control.ParseBindingResponse(buf[:n]); err == nil && got == tx {
			return true
		}
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServerBlockList: a blocked address's login is refused with the reason and its binding requests
// go unanswered; adding a logged-in node's address to the file disconnects it (and only it) within
// a few seconds; a bad edit keeps the old list.
func TestServerBlockList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	writeFile(t, path, "# abusers\n10.0.0.0/8\n127.0.0.2 # one host\n")
	s := startRelay(t, func(c *ServerConfig) { c.BlockList = path })
	key := func() *identity.Key { k, _ := identity.Generate(); return k }

	blocked := newClientFrom(t, s, net.IPv4(127, 0, 0, 2), key())
	wantClosed(t, "login from a blocked address", blocked.tryLogin(t), closeBlocked, "blocked by the relay operator")
	a, d := newClient(t, s), newClientFrom(t, s, net.IPv4(127, 0, 0, 3), key())
	if bindingAnswered(t, s, net.IPv4(127, 0, 0, 2), a) {
		t.Error("a blocked address got a binding response")
	}
	if !bindingAnswered(t, s, net.IPv4(127, 0, 0, 1), a) {
		t.Fatal("no binding response for an address that is not blocked")
	}
	a.login(t, d)
	d.login(t, a)
	a.expect(t, d, []byte("d to a"))

	// d's address joins the list: d is disconnected, a stays.
	writeFile(t, path, "# abusers\n10.0.0.0/8\n127.0.0.2 # one host\n127.0.0.3\n")
	select {
	case <-d.conn.Context().Done():
		wantClosed(t, "d after its address was blocked", context.Cause(d.conn.Context()), closeBlocked, "blocked by the relay operator")
	case <-time.After(abuse.CheckEvery + 30*time.Second): // the check's interval, and a safety net
		t.Fatal("a node from a newly blocked address stays logged in")
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return s.Nodes() == 1 }, "Nodes() = %d, want 1 (a)", s.Nodes())
	if a.conn.Context().Err() != nil {
		t.Fatal("a, whose address is not blocked, was disconnected too")
	}
	a.expectNothing(t, d, []byte("from a blocked address"))
	wantClosed(t, "d logging in again", d.tryLogin(t, a), closeBlocked, "blocked")

	// A bad edit keeps the old list and says which line.
	writeFile(t, path, "127.0.0.3\nnot-an-address\n")
	// (nil if the relay's own periodic check read the file first)
	if err := s.ReloadBlockList(); err != nil && !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad edit: %v, want an error naming line 2", err)
	}
	wantClosed(t, "login from a blocked address after a bad edit", blocked.tryLogin(t), closeBlocked, "blocked")

	// Unblocked: logins work again.
	writeFile(t, path, "# nothing\n")
	if err := s.ReloadBlockList(); err != nil {
		t.Fatal(err)
	}
	d.login(t, a)
	a.expect(t, d, []byte("d to a, unblocked"))
}

func TestServerBadBlockList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	writeFile(t, path, "10.0.0.0/8\n\n10.0.0.0/33\n")
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	k, _ := identity.Generate()
	if _, err := NewServer(ServerConfig{Key: k, Conn: pc, BlockList: path}); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("NewServer with a bad block list: %v, want an error naming line 3", err)
	}
	if _, err := NewServer(ServerConfig{Key: k, Conn: pc, BlockList: path + ".missing"}); err == nil {
		t.Fatal("NewServer with a missing block list succeeded")
	}
}

func TestServerLoginRateLimitPerKey(t *testing.T) {
	clock := testkit.NewClock() // buckets fill only when the test says: a slow login changes nothing
	s := startRelay(t, func(c *ServerConfig) { c.LoginRateKey, c.LoginBurstKey, c.clock = 1, 2, clock.Now })
	k, _ := identity.Generate()
	for range 2 {
		c := newClientFrom(t, s, net.IPv4(127, 0, 0, 1), k)
		c.login(t)
		c.conn.CloseWithError(0, "")
	}
	c := newClientFrom(t, s, net.IPv4(127, 0, 0, 1), k)
	wantClosed(t, "a third login at once", c.tryLogin(t), closeRateLimited, "with this identity")
	newClient(t, s).login(t) // another identity is not affected
	clock.Advance(time.Second)
	if err := c.tryLogin(t); err != nil {
		t.Fatalf("a login a second later: %v", err)
	}
}

func TestServerLoginRateLimitPerAddress(t *testing.T) {
	clock := testkit.NewClock()
	s := startRelay(t, func(c *ServerConfig) { c.LoginRateIP, c.LoginBurstIP, c.limitLoopback, c.clock = 1, 3, true, clock.Now })
	for range 3 {
		newClient(t, s).login(t)
	}
	wantClosed(t, "a fourth login from one address", newClient(t, s).tryLogin(t), closeRateLimited, "from this address")
	// Another address has its own bucket.
	k, _ := identity.Generate()
	newClientFrom(t, s, net.IPv4(127, 0, 0, 4), k).login(t)
	clock.Advance(time.Second)
	newClient(t, s).login(t)
}

// TestServerLoginLimitsDefault: loopback (this host) is limited per key only, and without settings
// the per-key limit is the coord's default.
func TestServerLoginLimitsDefault(t *testing.T) {
	clock := testkit.NewClock()
	s := startRelay(t, func(c *ServerConfig) { c.LoginRateIP, c.LoginBurstIP, c.clock = 1, 1, clock.Now })
	for range 3 {
		newClient(t, s).login(t) // fresh keys from one loopback address
	}
	k, _ := identity.Generate()
	for range abuse.DefaultLoginBurstKey {
		c := newClientFrom(t, s, net.IPv4(127, 0, 0, 1), k)
		c.login(t)
		c.conn.CloseWithError(0, "")
	}
	wantClosed(t, "one login more than the default burst", newClientFrom(t, s, net.IPv4(127, 0, 0, 1), k).tryLogin(t),
		closeRateLimited, "with this identity")
}
