package coord

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// TestFailedLoginTellsPeers: a login whose welcome or peer map cannot be written (the node stops
// reading, then goes) after its peers were told it is online tells them it is offline again.
func TestFailedLoginTellsPeers(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.frameBudget = 2000 })
	a := dial(t, srv)
	a.login(t, "a")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	for i := range 30 {
		f := dial(t, srv)
		f.login(t, fmt.Sprintf("f%d", i))
		f.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	}
	bkey, _ := identity.Generate()
	b := dialKey(t, srv, bkey)
	b.login(t, "b")
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	b.conn.CloseWithError(0, "bye")
	a.waitDelta(t, "b offline", upserts("b", false))
	// b again, with a tiny window, never reading.
	tlsConf, _ := identity.TLSConfig(bkey, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const window = 1024
	conn, err := quic.DialAddr(ctx, srv.Addr().String(), tlsConf, &quic.Config{
		InitialStreamReceiveWindow: window, MaxStreamReceiveWindow: window,
		InitialConnectionReceiveWindow: window, MaxConnectionReceiveWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := conn.OpenStreamSync(ctx)
	control.WriteMsg(st, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "b",
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}})
	// The server tells b's peers it is online before it sends b its peer map, which the window stalls.
	a.waitDelta(t, "b online again", upserts("b", true))
	conn.CloseWithError(0, "gone")
	a.waitDelta(t, "b offline after its failed login", upserts("b", false))
	testkit.Eventually(t, 10*time.Second, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.sessions[keyOf(bkey.Public())] == nil
	}, "b's failed login is still registered")
}

// TestEndpointLockOrder: endpoint updates (a node's read loop) and peer records of the same node
// (any change under changeMu) take s.mu and the session's lock in the same order; they deadlocked
// the whole server when they did not.
func TestEndpointLockOrder(t *testing.T) {
	srv := startServer(t)
	bkey, _ := identity.Generate()
	b := dialKey(t, srv, bkey)
	b.login(t, "b")
	srv.mu.Lock()
	sess := srv.sessions[keyOf(bkey.Public())]
	srv.mu.Unlock()
	node, err := srv.cfg.Store.Node(srv.ctx, bkey.Public())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			srv.updateEndpoints(sess, &control.Endpoints{Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(1000+i%2))}})
		}
	}()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			srv.peerRecord(node, nil)
		}
	}()
	select {
	case <-done:
		close(stop)
	case <-time.After(20 * time.Second):
		t.Fatal("deadlock: updateEndpoints and peerRecord stuck")
	}
}
