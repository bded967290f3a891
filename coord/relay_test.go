package coord

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// sideClient is a logged-in node whose socket also speaks the side channel, like a real node's.
type sideClient struct {
	*client
	key []byte
	tr  *quic.Transport
}

func dialSide(t *testing.T, srv *Server, name string) *sideClient {
	t.Helper()
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	tlsConf, _ := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, srv.Addr(), tlsConf, clientQUIC())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sideClient{client: &client{conn: conn, stream: stream}, key: key.Public(), tr: tr}
	c.login(t, name)
	return c
}

// next returns the next side-channel packet, or nil after d.
func (c *sideClient) next(d time.Duration) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	buf := make([]byte, 2048)
	n, _, err := c.tr.ReadNonQUICPacket(ctx, buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// relayedBefore sends a binding request from c's socket and returns the side-channel packets that
// reached c before the answer. The coord takes side-channel packets in the order they arrive, and
// loopback delivers them in the order they are sent, so the answer comes after anything the coord
// forwarded to c for a packet sent before the request: a test proves that a packet was not
// forwarded without waiting to see whether it comes.
func (c *sideClient) relayedBefore(t *testing.T, srv *Server) [][]byte {
	t.Helper()
	tx := [control.TxIDSize]byte{0xaa, 0x55}
	if _, err := c.tr.WriteTo(control.AppendBindingRequest(nil, tx), srv.Addr()); err != nil {
		t.Fatal(err)
	}
	var before [][]byte
	for {
		p := c.next(ioTimeout)
		if p == nil {
			t.Fatal("the coord did not answer a binding request")
		}
		if got, _, err := control.ParseBindingResponse(p); err == nil && got == tx {
			return before
		}
		before = append(before, p)
	}
}

func TestRelayForwardsOnlyBetweenPeers(t *testing.T) {
	srv := startServer(t)
	x, y, z := dialSide(t, srv, "x"), dialSide(t, srv, "y"), dialSide(t, srv, "z")
	x.request(t, control.Request{ID: 1, Op: control.OpCreate, Network: "lan", Open: true})
	y.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "lan"})
	y.next(0) // start reading side-channel packets
	z.next(0)

	payload := []byte("an end-to-end QUIC packet")
	send := func(from *sideClient, to []byte) {
		t.Helper()
		if _, err := from.tr.WriteTo(control.AppendRelay(nil, control.KindRelayTo, to, payload), srv.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	send(x, y.key)
	got := y.next(ioTimeout)
	kind, src, p, err := control.ParseRelay(got)
	if err != nil || kind != control.KindRelayFrom || !bytes.Equal(src, x.key) || !bytes.Equal(p, payload) {
		t.Fatalf("y received %x (%v), want a relay frame from x with the payload", got, err)
	}

	send(x, z.key) // z shares no network with x
	if got := z.relayedBefore(t, srv); got != nil {
		t.Fatalf("z received %x from x, with whom it shares no network", got)
	}
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.WriteTo(control.AppendRelay(nil, control.KindRelayTo, y.key, payload), srv.Addr())
	if got := y.relayedBefore(t, srv); got != nil {
		t.Fatalf("y received %x from an address with no logged-in node", got)
	}

	// Binding: the coord says where a request came from, in no more bytes than were sent.
	req := control.AppendBindingRequest(nil, [control.TxIDSize]byte{5})
	stranger.WriteTo(req, srv.Addr())
	stranger.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 2048)
	n, err := stranger.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	tx, obs, err := control.ParseBindingResponse(buf[:n])
	if want := stranger.LocalAddr().(*net.UDPAddr).AddrPort(); err != nil || tx[0] != 5 || obs != netip.AddrPortFrom(want.Addr().Unmap(), want.Port()) {
		t.Fatalf("binding response %v %v %v, want %v", tx, obs, err, want)
	}
	if n > len(req) {
		t.Fatalf("binding response of %d bytes to a %d-byte request: an amplifier", n, len(req))
	}
}

// TestWelcomeAnnouncesRelays: the standalone relays in the config reach nodes in Welcome, in order,
// and --no-relay turns off only the coord's own relay.
func TestWelcomeAnnouncesRelays(t *testing.T) {
	relays := []control.Relay{
		{Addr: netip.MustParseAddrPort("192.0.2.1:7401"), Key: "SHA256:" + string(bytes.Repeat([]byte("a"), 43))},
		{Addr: netip.MustParseAddrPort("[2001:db8::1]:7401"), Key: "SHA256:" + string(bytes.Repeat([]byte("b"), 43))},
	}
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.Relays = relays; c.NoRelay = true })
	w := dial(t, srv).login(t, "x")
	if w.Relay || len(w.Relays) != 2 || w.Relays[0] != relays[0] || w.Relays[1] != relays[1] {
		t.Fatalf("welcome relay=%v relays=%+v, want no own relay and %+v", w.Relay, w.Relays, relays)
	}
	if _, err := New(Config{Key: srv.cfg.Key, Store: srv.cfg.Store, Conn: srv.cfg.Conn, Relays: make([]control.Relay, control.MaxRelays+1)}); err == nil {
		t.Error("New accepted more relays than a Welcome may carry")
	}
}
