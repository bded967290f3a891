package coord

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// TestOversizedLoginRefused: a login frame beyond control.MaxLoginFrame is refused as soon as its
// length is read, before any of it is buffered.
func TestOversizedLoginRefused(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], control.MaxLoginFrame+1)
	if _, err := c.stream.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	testkit.Eventually(t, 10*time.Second, func() bool { n, _ := srv.PendingLogins(); return n == 0 }, "logins still pending")
}

// TestRepliesBounded: a node that sends requests but does not read its replies is no longer read
// once maxQueuedReplies wait for it, and so cannot make the server queue more.
func TestRepliesBounded(t *testing.T) {
	srv := startServer(t)
	key, _ := identity.Generate()
	tlsConf, _ := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const window = 16 << 10 // a small receive window: the server's writes block soon
	conn, err := quic.DialAddr(ctx, srv.Addr().String(), tlsConf, &quic.Config{
		InitialStreamReceiveWindow: window, MaxStreamReceiveWindow: window,
		InitialConnectionReceiveWindow: window, MaxConnectionReceiveWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	control.WriteMsg(st, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "greedy",
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}})
	// Never read; write requests (padded to 1 KiB, so that they fill the server's receive window)
	// until the server stops taking them — its reads stall, then so do our writes — or 20000 are out.
	st.SetWriteDeadline(time.Now().Add(3 * time.Second))
	sent, pad := 0, string(make([]byte, 1000))
	const most = 20000
	for ; sent < most; sent++ {
		r := control.Request{ID: uint64(sent + 1), Op: control.OpMembers, Network: "nowhere", Password: pad}
		if err := control.WriteMsg(st, &control.Msg{Type: control.TypeRequest, Request: &r}); err != nil {
			break
		}
	}
	srv.mu.Lock()
	sess := srv.sessions[keyOf(key.Public())]
	srv.mu.Unlock()
	if sess == nil {
		t.Fatal("not logged in")
	}
	// The server has stopped reading when every reply slot is taken (none is freed: we do not read).
	testkit.Eventually(t, 10*time.Second, func() bool { return len(sess.replySlots) == cap(sess.replySlots) },
		"the reply slots never filled up")
	sess.mu.Lock()
	queued := len(sess.replies)
	sess.mu.Unlock()
	if queued > maxQueuedReplies || len(sess.replySlots) > maxQueuedReplies {
		t.Fatalf("%d replies queued, %d slots taken; bound %d", queued, len(sess.replySlots), maxQueuedReplies)
	}
	if sent == most {
		t.Fatal("the server kept reading requests it could not answer")
	}
	t.Logf("server stopped reading after %d requests; %d replies queued, %d unwritten", sent, queued, len(sess.replySlots))
}

// TestPendingLoginsPerAddress: one address holds at most a quarter of the pending slots.
func TestPendingLoginsPerAddress(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.MaxPendingLogins, c.limitLoopback = 8, true })
	for i := range 2 {
		conn, err := rawDial(srv)
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		defer conn.CloseWithError(0, "")
	}
	if conn, err := rawDial(srv); err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("a third half-open connection from one address was accepted (bound 8/4)")
	}
	if p, refused := srv.PendingLogins(); p != 2 || refused == 0 {
		t.Fatalf("pending %d, refused %d; want 2 and some", p, refused)
	}
}

// TestEndpointUpdatesBounded: a node that floods endpoint updates reaches its peers with a few
// deltas, then one a second, and the latest endpoints always arrive.
func TestEndpointUpdatesBounded(t *testing.T) {
	srv := startServer(t)
	a, b := dial(t, srv), dial(t, srv)
	a.login(t, "a")
	b.login(t, "b")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	a.recv(t, control.TypePeerDelta) // b arrives

	const updates = 300
	var last uint16
	for i := range updates {
		last = uint16(10000 + i)
		b.send(t, &control.Msg{Type: control.TypeEndpoints, Endpoints: &control.Endpoints{
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), last),
				netip.MustParseAddrPort("224.0.0.1:5"), netip.MustParseAddrPort("[fe80::1]:5")}}})
	}
	deltas := 0
	a.stream.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		m, err := control.ReadMsg(a.stream)
		if err != nil {
			t.Fatalf("after %d deltas, the last endpoints never arrived: %v", deltas, err)
		}
		if m.Type != control.TypePeerDelta || len(m.PeerDelta.Upsert) != 1 {
			continue
		}
		deltas++
		eps := m.PeerDelta.Upsert[0].Endpoints
		for _, ep := range eps {
			if ep.Addr().IsMulticast() || ep.Addr().IsLinkLocalUnicast() {
				t.Fatalf("unreachable endpoint %v passed on", ep)
			}
		}
		if eps[len(eps)-1].Port() == last {
			break
		}
	}
	if deltas > 10 {
		t.Fatalf("%d updates became %d deltas", updates, deltas)
	}
	t.Logf("%d endpoint updates reached the peer as %d deltas, the last one included", updates, deltas)
}

// TestAuthKeyJoinsWithinLimits: an auth key cannot take a node into a full network, nor a node
// beyond its number of networks.
func TestAuthKeyJoinsWithinLimits(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.MaxNodesPerNetwork = 2 })
	a, b := dial(t, srv), dial(t, srv)
	a.login(t, "alice")
	b.login(t, "bob")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "one", Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "one"})
	_, secret, err := srv.cfg.Store.CreateAuthKey(context.Background(), store.AuthKeyOptions{Network: "one", Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv)
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "ci", AuthKey: secret}})
	if r := c.recv(t, control.TypeReply).Reply; r.Code != control.CodeNetworkFull {
		t.Fatalf("auth key into a full network: %+v", r)
	}
}

// TestPendingJoinsBounded: joins waiting for approval are bounded per node and per network.
func TestPendingJoinsBounded(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	owner, asker := dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	asker.login(t, "asker")
	for i := range maxPendingPerNode + 1 {
		name := fmt.Sprintf("club%02d", i)
		owner.do(t, "", control.Request{Op: control.OpCreate, Network: name, Approval: true})
		want := control.CodePending
		if i == maxPendingPerNode {
			want = control.CodeTooManyNetworks
		}
		asker.do(t, want, control.Request{Op: control.OpJoin, Network: name})
	}
	// One network's queue: fill it through the store, then a real node is turned away.
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "popular", Approval: true})
	st := srv.cfg.Store
	for i := range maxPendingPerNetwork {
		k := make([]byte, 32)
		binary.BigEndian.PutUint32(k, uint32(i+1))
		if _, err := st.UpsertNode(ctx, k, fmt.Sprintf("spam%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := st.AddPending(ctx, "popular", k); err != nil {
			t.Fatal(err)
		}
	}
	late := dial(t, srv)
	late.login(t, "late")
	rep := late.do(t, control.CodeNetworkFull, control.Request{Op: control.OpJoin, Network: "popular"})
	if !strings.Contains(rep.Error, "waiting for its owner's approval") {
		t.Errorf("refusal %q", rep.Error)
	}
}

// TestNewNodesPerAddress: an address brings only so many new identities; known ones log in as
// before.
func TestNewNodesPerAddress(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.newNodeBurst, c.limitLoopback = 3, true })
	first := mustKey(t)
	dialKey(t, srv, first).login(t, "n0")
	for i := 1; i < 3; i++ {
		dial(t, srv).login(t, fmt.Sprintf("n%d", i))
	}
	dial(t, srv).loginRefused(t, "n3", control.CodeRateLimited)
	dialKey(t, srv, first).login(t, "n0") // a known node is not new
}
