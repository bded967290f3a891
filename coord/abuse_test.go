package coord

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// loginRefused sends a login and asserts the server refuses it with code and closes the connection.
func (c *client) loginRefused(t *testing.T, name string, code control.Code) {
	t.Helper()
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: name}})
	if r := c.recv(t, control.TypeReply).Reply; r.Code != code || r.Error == "" {
		t.Fatalf("login %s: reply %+v, want code %q", name, r, code)
	}
	waitClosed(t, c)
}

func writeBlockList(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestBlockListRefusesLogin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocked")
	writeBlockList(t, path, "# loopback abusers\n\n10.0.0.0/8\n127.0.0.0/8 # all of it\n2001:db8::1\n")
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) { c.BlockList = path })
	dial(t, srv).loginRefused(t, "a", control.CodeBlocked)
	if n := srv.OnlineCount(); n != 0 {
		t.Fatalf("%d nodes online", n)
	}

	// Binding requests from a blocked address get no answer.
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.WriteTo(control.AppendBindingRequest(nil, [control.TxIDSize]byte{5}), srv.Addr())
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := pc.ReadFrom(make([]byte, 2048)); err == nil {
		t.Fatalf("blocked address got a %d-byte binding response", n)
	}
}

func TestBlockListBadLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocked")
	writeBlockList(t, path, "10.0.0.0/8\n\n10.0.0.0/33\n")
	cfg := Config{BlockList: path}
	srv := &Server{cfg: cfg}
	if err := srv.initAbuse(); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("bad block list: %v, want an error naming line 3", err)
	}
	for _, bad := range []string{"bogus", "1.2.3.4/8/8", "::ffff:1.2.3.4/120", "1.2.3"} {
		if _, err := parseBlockList([]byte(bad)); err == nil {
			t.Errorf("parseBlockList(%q) succeeded", bad)
		}
	}
	b, err := parseBlockList([]byte("192.0.2.7\n2001:db8::/32\n"))
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"192.0.2.7": true, "::ffff:192.0.2.7": true, "192.0.2.8": false, "2001:db8:1::5": true, "2001:db9::1": false} {
		if got := b.contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("contains(%s) = %v, want %v", a, got, want)
		}
	}
}

func mustKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBlockListReload: adding a node's range to the file disconnects it within a few seconds and
// refuses its next login; a bad edit keeps the old list.
func TestBlockListReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocked")
	writeBlockList(t, path, "10.0.0.0/8\n")
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) { c.BlockList = path })
	key := mustKey(t)
	a := dialKey(t, srv, key)
	a.login(t, "a")

	writeBlockList(t, path, "10.0.0.0/8\n127.0.0.1\n")
	waitClosed(t, a)
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeBlocked)

	// A bad line: the old list stays.
	writeBlockList(t, path, "10.0.0.0/8\nnot-an-address\n")
	time.Sleep(blockCheckEvery + time.Second)
	dial(t, srv).loginRefused(t, "b", control.CodeBlocked)

	// Unblocked again: logins work.
	writeBlockList(t, path, "# nothing\n")
	time.Sleep(blockCheckEvery + time.Second)
	dialKey(t, srv, key).login(t, "a")
}

func TestLoginRateLimitPerKey(t *testing.T) {
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.LoginRateKey, c.LoginBurstKey = 4, 2
	})
	key := mustKey(t)
	for range 2 {
		c := dialKey(t, srv, key)
		c.login(t, "a")
		c.conn.CloseWithError(0, "")
	}
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeRateLimited)
	dial(t, srv).login(t, "other") // another identity is not affected
	time.Sleep(300 * time.Millisecond)
	dialKey(t, srv, key).login(t, "a")
}

func TestLoginRateLimitPerAddress(t *testing.T) {
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.LoginRateIP, c.LoginBurstIP, c.limitLoopback = 4, 3, true
	})
	for i := range 3 {
		dial(t, srv).login(t, "n"+string(rune('a'+i)))
	}
	dial(t, srv).loginRefused(t, "x", control.CodeRateLimited)
	time.Sleep(300 * time.Millisecond)
	dial(t, srv).login(t, "y")
}

func TestLimiterSetBounded(t *testing.T) {
	l := newLimiterSet[netip.Prefix](1, 2)
	now := time.Now()
	for i := range maxLimiters + 100 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.allow(netip.PrefixFrom(a, 32), now)
	}
	if n := l.len(); n > maxLimiters {
		t.Fatalf("%d buckets, cap %d", n, maxLimiters)
	}
	l.sweep(now.Add(3 * time.Second)) // every bucket is full again
	if n := l.len(); n != 0 {
		t.Fatalf("%d buckets after the sweep", n)
	}
	if !newLimiterSet[nodeKey](rate.Inf, 1).allow(nodeKey{}, now) {
		t.Fatal("rate.Inf limited")
	}
}
