package peer

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/identity"
)

type testNode struct {
	ep  *Endpoint
	id  *identity.Key
	key Key
	got chan []byte
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return newTestNodeOn(t, k, pc)
}

// newTestNodeOn starts a node with identity k on pc.
func newTestNodeOn(t *testing.T, k *identity.Key, pc net.PacketConn) *testNode {
	t.Helper()
	n := &testNode{id: k, got: make(chan []byte, 64)}
	n.key, _ = KeyOf(k.Public())
	var err error
	n.ep, err = New(Config{Key: k, Conn: pc, Logger: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug}),
		Receive: func(from Key, pkt []byte) {
			select {
			case n.got <- pkt:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.ep.Close() })
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (n *testNode) info() Info {
	return Info{Key: n.key, Endpoints: []netip.AddrPort{n.ep.LocalAddr()}}
}

// sendUntil retries Send until the link is up and the packet arrives, or fails the test.
func sendUntil(t *testing.T, from, to *testNode, pkt []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		err := from.ep.Send(to.key, pkt)
		if err != nil && !errors.Is(err, ErrNoLink) {
			t.Fatalf("send %d bytes: %v", len(pkt), err)
		}
		select {
		case got := <-to.got:
			if !bytes.Equal(got, pkt) {
				t.Fatalf("got %d bytes, want %d", len(got), len(pkt))
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("packet never arrived")
}

func TestLinkCarriesPacketsBothWays(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := newTestNode(t), newTestNode(t)
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	sendUntil(t, a, b, []byte("hello b"))
	sendUntil(t, b, a, []byte("hello a"))
	if st := a.ep.Status(b.key); st.Path != "direct" || st.Endpoint != b.ep.LocalAddr() {
		t.Errorf("status of b at a = %+v", st)
	}
	// Removing the peer closes the link.
	a.ep.SetPeers(nil)
	if err := a.ep.Send(b.key, []byte("x")); !errors.Is(err, ErrNoLink) {
		t.Errorf("send after removal: %v", err)
	}
	a.ep.Close()
	b.ep.Close()
	a.ep.Close() // idempotent
	waitGoroutines(t, before)
}

// TestMaxPacketSizeFits proves the overlay MTU assumption: a MaxPacketSize packet is accepted by a
// brand-new link, before any path MTU discovery.
func TestMaxPacketSizeFits(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	pkt := bytes.Repeat([]byte{0x45}, MaxPacketSize)
	sendUntil(t, a, b, pkt)
	sendUntil(t, b, a, pkt)
	// A fresh link reports its limit when asked for more (unless path MTU discovery already raised it).
	var tooLarge *quic.DatagramTooLargeError
	if err := a.ep.Send(b.key, make([]byte, 1500)); errors.As(err, &tooLarge) {
		t.Logf("largest datagram on a fresh link: %d bytes (MaxPacketSize %d)", tooLarge.MaxDatagramPayloadSize, MaxPacketSize)
		if tooLarge.MaxDatagramPayloadSize < MaxPacketSize {
			t.Errorf("MaxPacketSize %d exceeds what a link carries (%d)", MaxPacketSize, tooLarge.MaxDatagramPayloadSize)
		}
	} else if err != nil {
		t.Errorf("1500-byte send: %v", err)
	}
}

func TestStrangerIsRefused(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	// b does not know a: a's dial must fail and no packet may arrive.
	a.ep.SetPeers([]Info{b.info()})
	time.Sleep(300 * time.Millisecond)
	if err := a.ep.Send(b.key, []byte("x")); err == nil {
		select {
		case <-b.got:
			t.Fatal("stranger's packet delivered")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if st := a.ep.Status(b.key); st.Path != "none" {
		t.Errorf("stranger got a link: %+v", st)
	}
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > want {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left, want <= %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
	}
}

// TestRestartedPeerResetsLinks: a node killed and restarted on the same port with the same identity
// answers its peer's packets on the lost link with a stateless reset, so the peer drops that link and
// dials again at once instead of after its idle timeout (15 s; the stall check's probes, answered
// from the same address, do not move the link either).
func TestRestartedPeerResetsLinks(t *testing.T) {
	a := newTestNode(t)
	// b has the higher key, so a dials: the new link waits for a to give up the old one.
	var kb *identity.Key
	for kb == nil || bytes.Compare(kb.Public(), a.id.Public()) < 0 {
		kb, _ = identity.Generate()
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := newTestNodeOn(t, kb, pc)
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	sendUntil(t, a, b, []byte("before"))

	// Kill b: closing its transport drops the link without a word (quic-go sends no
	// CONNECTION_CLOSE then), and the socket goes.
	b.ep.tr.Close()
	b.ep.Close()
	killed := time.Now()
	pc2, err := net.ListenUDP("udp4", pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatalf("rebind %v: %v", pc.LocalAddr(), err)
	}
	b2 := newTestNodeOn(t, kb, pc2)
	b2.ep.SetPeers([]Info{a.info()})
	// quic-go answers only packets over 42 bytes with a reset (not a bare keep-alive): send one the
	// size of a small IP packet.
	sendUntil(t, a, b2, bytes.Repeat([]byte("after"), 20))
	took := time.Since(killed)
	t.Logf("a reached b's restarted endpoint %v after the kill (link idle timeout %v)", took.Round(time.Millisecond), a.ep.cfg.IdleTimeout)
	if took > a.ep.cfg.IdleTimeout/2 {
		t.Errorf("a reached the restarted b only after %v: it waited for the idle timeout (%v)", took, a.ep.cfg.IdleTimeout)
	}
}
