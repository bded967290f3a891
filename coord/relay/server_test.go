package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

func startRelay(t *testing.T, adjust func(*ServerConfig)) *Server {
	t.Helper()
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{Key: key, Conn: pc}
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// relayClient is a node's socket logged in to the relay, like a real node's.
type relayClient struct {
	key     []byte
	keyPriv *identity.Key
	tr      *quic.Transport
	conn    *quic.Conn
	stream  *quic.Stream
	relay   net.Addr
}

func newClient(t *testing.T, s *Server) *relayClient {
	t.Helper()
	k, _ := identity.Generate()
	return newClientFrom(t, s, net.IPv4(127, 0, 0, 1), k)
}

// newClientFrom is a client with key k on a socket of its own at ip.
func newClientFrom(t *testing.T, s *Server, ip net.IP, k *identity.Key) *relayClient {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	return &relayClient{key: k.Public(), keyPriv: k, tr: tr, relay: s.Addr()}
}

func (c *relayClient) login(t *testing.T, peers ...*relayClient) {
	t.Helper()
	if err := c.tryLogin(t, peers...); err != nil {
		t.Fatalf("relay login: %v", err)
	}
}

// tryLogin logs in naming peers and returns why the relay did not accept it, if it did not.
func (c *relayClient) tryLogin(t *testing.T, peers ...*relayClient) error {
	t.Helper()
	tlsConf, _ := identity.TLSConfig(c.keyPriv, control.RelayALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.tr.Dial(ctx, c.relay, tlsConf, &quic.Config{KeepAlivePeriod: time.Second})
	if err != nil {
		return err
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	c.conn, c.stream = conn, stream
	keys := make([][]byte, len(peers))
	for i, p := range peers {
		keys[i] = p.key
	}
	b, _ := control.AppendRelayConsent(nil, keys)
	stream.Write(b)
	stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ok [1]byte
	if _, err := io.ReadFull(stream, ok[:]); err != nil {
		return err
	}
	if ok[0] != control.RelayLoginOK {
		return fmt.Errorf("answer %d", ok[0])
	}
	return nil
}

// name sends a consent list naming peers.
func (c *relayClient) name(t *testing.T, peers ...*relayClient) {
	t.Helper()
	keys := make([][]byte, len(peers))
	for i, p := range peers {
		keys[i] = p.key
	}
	b, err := control.AppendRelayConsent(nil, keys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.stream.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (c *relayClient) send(t *testing.T, to []byte, payload []byte) {
	t.Helper()
	if _, err := c.tr.WriteTo(control.AppendRelay(nil, control.KindRelayTo, to, payload), c.relay); err != nil {
		t.Fatal(err)
	}
}

// next returns the next relay frame's source key and payload, or nil after d.
func (c *relayClient) next(d time.Duration) (src, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	buf := make([]byte, 2048)
	for {
		n, _, err := c.tr.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			return nil, nil
		}
		if _, k, p, err := control.ParseRelay(buf[:n]); err == nil {
			return k, p
		}
	}
}

// expect has sender send payload to c until c receives it (earlier frames are skipped: a consent
// list may still be on its way). The deadline is a safety net.
func (c *relayClient) expect(t *testing.T, sender *relayClient, payload []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sender.send(t, c.key, payload)
		src, p := c.next(200 * time.Millisecond)
		if bytes.Equal(src, sender.key) && bytes.Equal(p, payload) {
			return
		}
	}
	t.Fatalf("no frame %q from the sender arrived through the relay", payload)
}

// expectNothing asserts that c does not receive payload from sender. It proves the negative without
// waiting for it: c sends a binding request after sender's frame, and the relay, which takes packets
// in the order they come, answers it after whatever it forwarded of sender's frame (loopback
// delivers in order), so c must see the answer first.
func (c *relayClient) expectNothing(t *testing.T, sender *relayClient, payload []byte) {
	t.Helper()
	c.next(0) // c's transport drops non-QUIC packets until it is first asked for one
	sender.send(t, c.key, payload)
	if got := c.relayedBefore(t); len(got) > 0 {
		for _, f := range got {
			if _, k, p, err := control.ParseRelay(f); err == nil && bytes.Equal(k, sender.key) && bytes.Equal(p, payload) {
				t.Fatalf("received %q from %x through the relay, want nothing", p, k[:4])
			}
		}
	}
}

// relayedBefore sends a binding request from c's socket and returns the packets that reached c
// before the answer: those the relay forwarded to c for packets sent before the request.
func (c *relayClient) relayedBefore(t *testing.T) [][]byte {
	t.Helper()
	tx := [control.TxIDSize]byte{0xaa, 0x55}
	if _, err := c.tr.WriteTo(control.AppendBindingRequest(nil, tx), c.relay); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a safety net
	defer cancel()
	var before [][]byte
	for {
		buf := make([]byte, 2048)
		n, _, err := c.tr.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			t.Fatalf("the relay did not answer a binding request: %v", err)
		}
		if got, _, err := control.ParseBindingResponse(buf[:n]); err == nil && got == tx {
			return before
		}
		before = append(before, buf[:n])
	}
}

// consents reports whether the relay holds c's consent to frames from peer.
func (s *Server) consents(c, peer *relayClient) bool {
	s.mu.Lock()
	sess := s.sessions[Key(c.key)]
	s.mu.Unlock()
	return sess != nil && sess.Allows(Key(peer.key))
}

func TestServerMutualConsent(t *testing.T) {
	s := startRelay(t, nil)
	a, b, c := newClient(t, s), newClient(t, s), newClient(t, s)
	a.login(t, b, c)
	b.login(t, a)
	c.login(t, a, b) // c names both; b does not name c, a does

	a.expect(t, b, []byte("b to a"))
	b.expect(t, a, []byte("a to b"))
	a.expect(t, c, []byte("c to a"))
	b.expectNothing(t, c, []byte("c to b: b never named c"))
	c.expectNothing(t, b, []byte("b to c: b never named c"))

	// b withdraws its consent for a: nothing flows either way any more.
	b.name(t)
	testkit.Eventually(t, 30*time.Second, func() bool { return !s.consents(b, a) }, "the relay never took b's new consent list")
	b.expectNothing(t, a, []byte("a to b after withdrawal"))
	a.expectNothing(t, b, []byte("b to a after withdrawal"))

	// A stranger that is not logged in, sending from its own socket: nothing.
	stranger := newClient(t, s)
	b.name(t, a, stranger)
	a.expect(t, b, []byte("consent back"))
	b.expectNothing(t, stranger, []byte("from a stranger who never logged in"))

	if s.Nodes() != 3 {
		t.Errorf("Nodes() = %d, want 3", s.Nodes())
	}
	a.conn.CloseWithError(0, "bye")
	testkit.Eventually(t, 30*time.Second, func() bool { return s.Nodes() == 2 }, "Nodes() = %d after a left, want 2", s.Nodes())
}

func TestServerRefusesBadLogins(t *testing.T) {
	s := startRelay(t, func(c *ServerConfig) { c.MaxNodes = 1; c.LoginTimeout = 5 * time.Second })
	a, b := newClient(t, s), newClient(t, s)
	a.login(t, b)

	// Full: a second node is refused.
	tlsConf, _ := identity.TLSConfig(b.keyPriv, control.RelayALPN, false, func(ed25519.PublicKey) error { return nil })
	dialSend := func(frame []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := b.tr.Dial(ctx, s.Addr(), tlsConf, &quic.Config{})
		if err != nil {
			return err
		}
		defer conn.CloseWithError(0, "")
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			return err
		}
		st.Write(frame)
		st.SetReadDeadline(time.Now().Add(30 * time.Second)) // past the login timeout: the relay must end it
		var ok [1]byte
		_, err = io.ReadFull(st, ok[:])
		return err
	}
	empty, _ := control.AppendRelayConsent(nil, nil)
	if err := dialSend(empty); err == nil {
		t.Error("a second node logged in to a relay with MaxNodes 1")
	}
	a.conn.CloseWithError(0, "")
	testkit.Eventually(t, 30*time.Second, func() bool { return s.Nodes() == 0 }, "a never left")
	// Malformed: a length that is not whole keys, an oversized list, or nothing at all.
	for name, frame := range map[string][]byte{
		"ragged":    {0, 0, 0, 33},
		"oversized": {0xff, 0xff, 0xff, 0xff},
		"silent":    nil,
	} {
		if err := dialSend(frame); err == nil {
			t.Errorf("%s login accepted", name)
		}
	}
	if err := dialSend(empty); err != nil {
		t.Errorf("a good login after the bad ones: %v", err)
	}
}

func TestServerLimitsPerIP(t *testing.T) {
	s := startRelay(t, func(c *ServerConfig) { c.MaxPerIP = 2 })
	a, b, c := newClient(t, s), newClient(t, s), newClient(t, s)
	a.login(t, b)
	b.login(t, a)
	tlsConf, _ := identity.TLSConfig(c.keyPriv, control.RelayALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.tr.Dial(ctx, s.Addr(), tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := conn.OpenStreamSync(ctx)
	empty, _ := control.AppendRelayConsent(nil, nil)
	st.Write(empty)
	st.SetReadDeadline(time.Now().Add(3 * time.Second))
	var ok [1]byte
	if _, err := io.ReadFull(st, ok[:]); err == nil {
		t.Fatal("a third node from 127.0.0.1 logged in with MaxPerIP 2")
	}
	// A node logging in again (a new connection, same key) replaces itself, within the limit.
	old := a.conn
	a.login(t, b)
	b.expect(t, a, []byte("after re-login"))
	select {
	case <-old.Context().Done():
	case <-time.After(3 * time.Second):
		t.Error("the replaced login's connection stays open")
	}
	if s.Nodes() != 2 {
		t.Errorf("Nodes() = %d, want 2", s.Nodes())
	}
}

// TestRestartedRelayResets: a relay killed and restarted on the same port with the same key answers
// a node's next packet on the lost login connection with a stateless reset, so the node drops it at
// once instead of after its idle timeout.
func TestRestartedRelayResets(t *testing.T) {
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{Key: key, Conn: pc})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newClient(t, s), newClient(t, s)
	a.login(t)

	// Kill it: closing its transport drops the connections without a word (quic-go sends no
	// CONNECTION_CLOSE then), and the socket goes.
	s.l.Transport().Close()
	s.Close()
	killed := time.Now()
	pc2, err := net.ListenUDP("udp4", pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatalf("rebind %v: %v", pc.LocalAddr(), err)
	}
	s2, err := NewServer(ServerConfig{Key: key, Conn: pc2})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	a.name(t, b) // a packet over 42 bytes: quic-go does not answer smaller ones with a reset
	select {
	case <-a.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the node's login connection outlived the relay's restart")
	}
	var reset *quic.StatelessResetError
	if err := context.Cause(a.conn.Context()); !errors.As(err, &reset) {
		t.Errorf("connection ended by %v, want a stateless reset", err)
	}
	t.Logf("login connection reset %v after the kill", time.Since(killed).Round(time.Millisecond))
}

// TestRelayPendingBounded: connections that never log in hold one of MaxPending slots until the
// login timeout; with every slot taken, a new one is refused at the handshake.
func TestRelayPendingBounded(t *testing.T) {
	s := startRelay(t, func(c *ServerConfig) { c.MaxPending = 2; c.LoginTimeout = 5 * time.Second })
	dialRaw := func() (*quic.Conn, error) {
		k, _ := identity.Generate()
		tlsConf, _ := identity.TLSConfig(k, control.RelayALPN, false, func(ed25519.PublicKey) error { return nil })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, s.Addr().String(), tlsConf, &quic.Config{HandshakeIdleTimeout: 10 * time.Second})
	}
	var idle []*quic.Conn
	for i := range 2 {
		c, err := dialRaw()
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		defer c.CloseWithError(0, "")
		idle = append(idle, c)
	}
	if c, err := dialRaw(); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("a third half-open connection was accepted")
	}
	for _, c := range idle {
		select {
		case <-c.Context().Done():
		case <-time.After(30 * time.Second):
			t.Fatal("a half-open connection outlived the login timeout")
		}
	}
	testkit.Eventually(t, 30*time.Second, func() bool { p, _ := s.PendingLogins(); return p == 0 }, "slots still taken")
	c := newClient(t, s)
	c.login(t)
	if p, _ := s.PendingLogins(); p != 0 {
		t.Errorf("a logged-in node still holds a slot: %d", p)
	}
}
