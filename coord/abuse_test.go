package coord

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/tcptun"
	"github.com/warren-net/warren/internal/testkit"
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
	writeBlockList(t, path, "127.0.0.2\n")
	if err := srv.ReloadBlockList(); err != nil {
		t.Fatal(err)
	}
	if bindingAnswered(t, srv.Addr(), net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 1)) {
		t.Error("a blocked address got a binding response")
	}
}

// bindingAnswered reports whether the server at srv answers a binding request from address from. It
// proves a negative without a timeout: a request from witness, whose address is not blocked, follows
// the first, and the server, which takes its side-channel packets in order, answers it — so by the
// time the witness has its answer, any answer to from is already in from's socket (loopback delivers
// as it sends).
func bindingAnswered(t *testing.T, srv net.Addr, from, witness net.IP) bool {
	t.Helper()
	listen := func(ip net.IP) *net.UDPConn {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	pc, wc := listen(from), listen(witness)
	buf := make([]byte, 2048)
	pc.WriteTo(control.AppendBindingRequest(nil, [control.TxIDSize]byte{5}), srv)
	wc.WriteTo(control.AppendBindingRequest(nil, [control.TxIDSize]byte{6}), srv)
	wc.SetReadDeadline(time.Now().Add(10 * time.Second)) // a safety net: it is answered
	n, _, err := wc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the witness's binding request was not answered: %v", err)
	}
	if tx, _, err := control.ParseBindingResponse(buf[:n]); err != nil || tx != [control.TxIDSize]byte{6} {
		t.Fatalf("the witness got %x (%v), want the answer to its request", buf[:n], err)
	}
	// Already queued if it was sent: the deadline only ends the read when nothing is.
	pc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, _, err = pc.ReadFrom(buf)
	return err == nil
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
	// (nil if the server's own periodic check read the file first)
	if err := srv.ReloadBlockList(); err != nil && !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad edit: %v, want an error naming line 2", err)
	}
	dial(t, srv).loginRefused(t, "b", control.CodeBlocked)

	// Unblocked again: logins work.
	writeBlockList(t, path, "# nothing\n")
	if err := srv.ReloadBlockList(); err != nil {
		t.Fatal(err)
	}
	dialKey(t, srv, key).login(t, "a")
}

func TestLoginRateLimitPerKey(t *testing.T) {
	clock := testkit.NewClock() // buckets fill only when the test says: a slow login changes nothing
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.LoginRateKey, c.LoginBurstKey, c.clock = 1, 2, clock.Now
	})
	key := mustKey(t)
	for range 2 {
		c := dialKey(t, srv, key)
		c.login(t, "a")
		c.conn.CloseWithError(0, "")
	}
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeRateLimited)
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeRateLimited) // a refused try takes no token...
	dial(t, srv).login(t, "other")                                     // another identity is not affected
	clock.Advance(time.Second)                                         // ...and one comes back a second later
	dialKey(t, srv, key).login(t, "a")
	dialKey(t, srv, key).loginRefused(t, "a", control.CodeRateLimited)
}

func TestLoginRateLimitPerAddress(t *testing.T) {
	clock := testkit.NewClock()
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.LoginRateIP, c.LoginBurstIP, c.limitLoopback, c.clock = 1, 3, true, clock.Now
	})
	for i := range 3 {
		dial(t, srv).login(t, "n"+string(rune('a'+i)))
	}
	dial(t, srv).loginRefused(t, "x", control.CodeRateLimited)
	clock.Advance(time.Second)
	dial(t, srv).login(t, "y")
	dial(t, srv).loginRefused(t, "z", control.CodeRateLimited)
}

// startTCPServer starts a server whose TCP fallback (a tcptun.Server) listens on loopback too, and
// returns it with the fallback's address.
func startTCPServer(t *testing.T, adjust func(*Config)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		stls, err := identity.TLSConfig(c.Key, tcptun.ALPN, true, func(ed25519.PublicKey) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		c.TCP = tcptun.NewServer(tcptun.ServerConfig{Listener: ln, TLS: stls, Local: c.Conn.LocalAddr()})
		adjust(c)
	})
	return srv, ln.Addr().String()
}

// dialTCP connects to the server over a new stream of its TCP fallback, as a node whose UDP is
// blocked does.
func dialTCP(t *testing.T, srv *Server, addr string) *client {
	t.Helper()
	key, _ := identity.Generate()
	accept := func(ed25519.PublicKey) error { return nil }
	ttls, _ := identity.TLSConfig(key, tcptun.ALPN, false, accept)
	qtls, _ := identity.TLSConfig(key, control.ALPN, false, accept)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := tcptun.Dial(ctx, addr, ttls, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc := tcptun.NewConn(tc, srv.Addr())
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close() })
	conn, err := tr.Dial(ctx, srv.Addr(), qtls, clientQUIC())
	if err != nil {
		t.Fatal(err)
	}
	return openControl(t, ctx, conn)
}

// TestLoginRateLimitOverTCP: each stream of the TCP fallback is a new synthetic address to QUIC, but
// the limits count its client's real address, so reconnecting over a fresh stream escapes nothing:
// not the login rate, not the block list.
func TestLoginRateLimitOverTCP(t *testing.T) {
	clock := testkit.NewClock()
	srv, addr := startTCPServer(t, func(c *Config) {
		c.LoginRateIP, c.LoginBurstIP, c.limitLoopback, c.clock = 1, 2, true, clock.Now
	})
	for _, name := range []string{"a", "b"} {
		dialTCP(t, srv, addr).login(t, name)
	}
	dialTCP(t, srv, addr).loginRefused(t, "c", control.CodeRateLimited)
	dial(t, srv).loginRefused(t, "d", control.CodeRateLimited) // the same address over UDP
	clock.Advance(time.Second)
	dialTCP(t, srv, addr).login(t, "e")
	if src := srv.guard.Source(netip.MustParseAddr("100::1")); !src.IsLoopback() {
		t.Errorf("the first stream's synthetic address names %v, want its client's loopback address", src)
	}
}

// TestBlockListOverTCP: a block list naming a TCP client's real address disconnects its session when
// the list is reloaded (by the server's own periodic check as well as on SIGHUP).
func TestBlockListOverTCP(t *testing.T) {
	list := filepath.Join(t.TempDir(), "blocklist")
	writeBlockList(t, list, "192.0.2.0/24\n")
	srv, addr := startTCPServer(t, func(c *Config) { c.BlockList = list })
	c := dialTCP(t, srv, addr)
	c.login(t, "a")
	writeBlockList(t, list, "192.0.2.0/24\n127.0.0.0/8\n")
	srv.checkAbuse() // what the server runs every few seconds
	waitClosed(t, c)
}
