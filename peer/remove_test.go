package peer

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

// newEchoNode is a test node whose AcceptStream echoes every stream back.
func newEchoNode(t *testing.T) *testNode {
	t.Helper()
	pc, err := testNet(t).Listen(netip.MustParseAddrPort("10.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	return newTestNodeWith(t, newTestKey(t), pc, func(s *IncomingStream) {
		if c, err := s.Accept(); err == nil {
			io.Copy(c, c)
			c.Close()
		}
	})
}

func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch")
	}
	return nil
}

// TestRemovedPeerIsCutOff: when a peer leaves the peer set (kicked from the shared network), every
// link to it closes at once — including a retired link that a proxied connection still rides — its
// packets stop arriving, and it cannot open a new link. In virtual time (synctest).
func TestRemovedPeerIsCutOff(t *testing.T) {
	synctest.Test(t, testRemovedPeerIsCutOff)
}

func testRemovedPeerIsCutOff(t *testing.T) {
	a, b := newTestNode(t), newEchoNode(t)
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	sendUntil(t, a, b, []byte("hello"))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 22})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c, "before"); err != nil {
		t.Fatal(err)
	}

	// A second link replaces the first, which is retired but kept open for the stream on it.
	r := a.ep.dial(ctx, b.key, PathDirect, b.ep.LocalAddr())
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !a.ep.install(b.key, r.conn, PathDirect, true) {
		t.Fatal("second link not installed")
	}
	sendUntil(t, a, b, []byte("on the new link"))
	if err := echo(c, "retired link still carries the stream"); err != nil {
		t.Fatalf("stream on the retired link: %v", err)
	}
	b.ep.mu.RLock()
	nlinks := len(b.ep.peers[a.key].links)
	b.ep.mu.RUnlock()
	if nlinks != 2 {
		t.Fatalf("b tracks %d links to a, want 2 (current and retired)", nlinks)
	}

	// b drops a: the stream on the retired link dies, packets stop, redials are refused.
	b.ep.SetPeers(nil)
	removed := time.Now()
	if err := echo(c, "after"); err == nil {
		t.Fatal("the removed peer's stream still works")
	}
	t.Logf("stream cut %v after removal", time.Since(removed))
	for range len(b.got) {
		<-b.got
	}
	for i := range 20 {
		a.ep.Send(b.key, []byte{byte(i)})
	}
	time.Sleep(time.Second) // virtual: whatever was sent has arrived, or never will
	synctest.Wait()
	select {
	case <-b.got:
		t.Fatal("a packet from the removed peer was delivered")
	default:
	}
	// TLS 1.3 lets the client finish before the server has checked its certificate, so the dial
	// may look successful for a moment: the server must close it, and take nothing from it.
	if r := a.ep.dial(ctx, b.key, PathDirect, b.ep.LocalAddr()); r.err == nil {
		defer r.conn.CloseWithError(0, "")
		r.conn.SendDatagram([]byte("sneaky"))
		select {
		case <-r.conn.Context().Done():
		case <-time.After(2 * time.Second):
			t.Fatal("the removed peer's new link stayed open")
		}
		select {
		case <-b.got:
			t.Fatal("a packet on the refused link was delivered")
		default:
		}
	}
	if st := b.ep.Status(a.key); st.Path != PathNone {
		t.Errorf("b still has a path to a: %+v", st)
	}
}
