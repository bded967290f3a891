package coord

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

func startServer(t *testing.T) *Server {
	t.Helper()
	return startServerWith(t, filepath.Join(t.TempDir(), "w.db"), nil)
}

// startServerWith starts a server on the database at path; adjust, if set, may change the config.
func startServerWith(t testing.TB, path string, adjust func(*Config)) *Server {
	t.Helper()
	pools := store.Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")}
	st, err := store.Open(path, pools)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// The login timeout is long enough that a loaded machine's test client logs in well within it.
	cfg := Config{Key: key, Store: st, Pools: pools, Conn: pc, LoginTimeout: 5 * time.Second,
		Logger: testkit.Logger(t, "coord")}
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); st.Close() })
	return srv
}

type client struct {
	conn    *quic.Conn
	stream  *quic.Stream
	skipped []*control.Msg // messages request read past while waiting for its reply
}

// clientQUIC is a test client's QUIC configuration: keep-alives like a node's, so that a client
// idle while a slow test goes on is not timed out by the server.
func clientQUIC() *quic.Config { return &quic.Config{KeepAlivePeriod: 4 * time.Second} }

func dial(t *testing.T, srv *Server) *client {
	t.Helper()
	key, _ := identity.Generate()
	return dialKey(t, srv, key)
}

// dialKey connects with the given identity, e.g. to log in again as the same node.
func dialKey(t *testing.T, srv *Server, key *identity.Key) *client {
	t.Helper()
	tlsConf, _ := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, srv.Addr().String(), tlsConf, clientQUIC())
	if err != nil {
		t.Fatal(err)
	}
	return openControl(t, ctx, conn)
}

// openControl opens the control stream on a connection to the server.
func openControl(t *testing.T, ctx context.Context, conn *quic.Conn) *client {
	t.Helper()
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &client{conn: conn, stream: stream}
}

// ioTimeout bounds each of a test client's reads and writes: a safety net that fails a test that
// would otherwise hang, generous for a loaded machine (argon2id under -race on two busy cores).
const ioTimeout = 30 * time.Second

func (c *client) send(t *testing.T, m *control.Msg) {
	t.Helper()
	c.stream.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := control.WriteMsg(c.stream, m); err != nil {
		t.Fatal(err)
	}
}

func (c *client) recv(t *testing.T, want control.Type) *control.Msg {
	t.Helper()
	c.stream.SetReadDeadline(time.Now().Add(ioTimeout))
	m, err := control.ReadMsg(c.stream)
	if err != nil {
		t.Fatalf("waiting for %s: %v", want, err)
	}
	if m.Type != want {
		t.Fatalf("got %s, want %s", m.Type, want)
	}
	return m
}

func (c *client) login(t *testing.T, name string) *control.Welcome {
	t.Helper()
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: name,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}})
	w := c.recv(t, control.TypeWelcome).Welcome
	c.peerMap(t)
	return w
}

// peerDelta returns the next delta about peers, skipping those that only carry rule lists (the
// creator of a network gets its rules pushed, possibly after the reply to its request).
func (c *client) peerDelta(t *testing.T) *control.PeerDelta {
	t.Helper()
	for {
		d := c.recv(t, control.TypePeerDelta).PeerDelta
		if len(d.Upsert)+len(d.Remove) > 0 || d.Networks != nil {
			return d
		}
	}
}

// peerMap reads a whole peer map, in as many frames as it comes.
func (c *client) peerMap(t *testing.T) *control.PeerMap {
	t.Helper()
	pm, err := control.ReadPeerMap(c.stream, c.recv(t, control.TypePeerMap).PeerMap)
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

func (c *client) request(t *testing.T, r control.Request) *control.Reply {
	t.Helper()
	c.send(t, &control.Msg{Type: control.TypeRequest, Request: &r})
	for {
		c.stream.SetReadDeadline(time.Now().Add(ioTimeout))
		m, err := control.ReadMsg(c.stream)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == control.TypeReply && m.Reply.ID == r.ID {
			return m.Reply
		}
		c.skipped = append(c.skipped, m)
	}
}

// waitClosed asserts that the server closes the connection.
func waitClosed(t *testing.T, c *client) {
	t.Helper()
	select {
	case <-c.conn.Context().Done():
	case <-time.After(ioTimeout):
		t.Fatal("server kept the connection open")
	}
}

func TestLoginAndPeerDeltas(t *testing.T) {
	srv := startServer(t)
	a, b := dial(t, srv), dial(t, srv)
	wa := a.login(t, "a")
	wb := b.login(t, "b")
	if wa.IPv4 == wb.IPv4 || !wa.Prefix4.Contains(wa.IPv4) {
		t.Fatalf("addresses %v %v", wa.IPv4, wb.IPv4)
	}
	if rep := a.request(t, control.Request{ID: 1, Op: control.OpCreate, Network: "lan", Password: "pw"}); rep.Code != "" {
		t.Fatalf("create: %+v", rep)
	}
	if rep := b.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "lan", Password: "no"}); rep.Code != control.CodeWrongPassword {
		t.Fatalf("wrong password: %+v", rep)
	}
	if rep := b.request(t, control.Request{ID: 2, Op: control.OpJoin, Network: "lan", Password: "pw"}); rep.Code != "" || len(rep.Networks) != 1 {
		t.Fatalf("join: %+v", rep)
	}
	// a learns about b, online, with its endpoints (the observed address first).
	d := a.peerDelta(t)
	if len(d.Upsert) != 1 || d.Upsert[0].Name != "b" || !d.Upsert[0].Online || len(d.Upsert[0].Endpoints) != 2 {
		t.Fatalf("delta at a: %+v", d)
	}
	// b reports a sequential NAT: a gets its mapping and port pattern; a new last port alone is news too.
	for _, last := range []uint16{30004, 30107} {
		b.send(t, &control.Msg{Type: control.TypeEndpoints, Endpoints: &control.Endpoints{
			Mapping: control.MappingDependent, Ports: &control.Ports{Delta: 1, Last: last}}})
		d = a.peerDelta(t)
		if len(d.Upsert) != 1 || d.Upsert[0].Mapping != control.MappingDependent || d.Upsert[0].Ports == nil ||
			*d.Upsert[0].Ports != (control.Ports{Delta: 1, Last: last}) {
			t.Fatalf("delta at a after b's port pattern (last %d): %+v", last, d)
		}
	}
	// b goes away: a is told it is offline.
	b.conn.CloseWithError(0, "bye")
	d = a.peerDelta(t)
	if len(d.Upsert) != 1 || d.Upsert[0].Online {
		t.Fatalf("offline delta: %+v", d)
	}
	if srv.OnlineCount() != 1 {
		t.Errorf("online count %d", srv.OnlineCount())
	}
}

func TestBadInputClosesConnection(t *testing.T) {
	srv := startServer(t)

	// Not a login first.
	c := dial(t, srv)
	c.send(t, &control.Msg{Type: control.TypeEndpoints, Endpoints: &control.Endpoints{}})
	waitClosed(t, c)

	// A frame header announcing more than MaxFrameSize.
	c = dial(t, srv)
	c.login(t, "x")
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], control.MaxFrameSize+1)
	c.stream.Write(hdr[:])
	waitClosed(t, c)

	// Garbage JSON after login.
	c = dial(t, srv)
	c.login(t, "y")
	binary.BigEndian.PutUint32(hdr[:], 3)
	c.stream.Write(append(hdr[:], "{{{"...))
	waitClosed(t, c)

	// Silence: no login within LoginTimeout.
	c = dial(t, srv)
	waitClosed(t, c)

	// A wrong protocol version gets a reply that says so.
	c = dial(t, srv)
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: 99, Name: "z"}})
	if r := c.recv(t, control.TypeReply).Reply; r.Code != control.CodeVersion {
		t.Errorf("version reply %+v", r)
	}
	// An invalid name is refused.
	c = dial(t, srv)
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "Not Valid"}})
	if r := c.recv(t, control.TypeReply).Reply; r.Code != control.CodeInvalid {
		t.Errorf("invalid name accepted: %+v", r)
	}
}
