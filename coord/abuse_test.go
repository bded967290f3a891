package coord

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	srv := &Server{cfg: Config{BlockList: path}}
	if err := srv.initAbuse(); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("bad block list: %v, want an error naming line 3", err)
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
		c.LoginRateKey, c.LoginBurstKey = 1, 2
	})
	key := mustKey(t)
	for range 2 {
		c := dialKey(t, srv, key)
		c.login(t, "a")
		c.conn.CloseWithError(0, "")
	}
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeRateLimited)
	dial(t, srv).login(t, "other")      // another identity is not affected
	time.Sleep(1100 * time.Millisecond) // one token back
	dialKey(t, srv, key).login(t, "a")
}

func TestLoginRateLimitPerAddress(t *testing.T) {
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.LoginRateIP, c.LoginBurstIP, c.limitLoopback = 1, 3, true
	})
	for i := range 3 {
		dial(t, srv).login(t, "n"+string(rune('a'+i)))
	}
	dial(t, srv).loginRefused(t, "x", control.CodeRateLimited)
	time.Sleep(1100 * time.Millisecond) // one token back
	dial(t, srv).login(t, "y")
}
