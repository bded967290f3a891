package peer

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/memnet"
	"github.com/warren-net/warren/internal/testkit"
)

type testNode struct {
	ep  *Endpoint
	id  *identity.Key
	key Key
	got chan []byte

	// resent holds the payloads sendUntil saw arrive: it resends until one does, so more copies may
	// follow, and Receive drops them instead of queueing them in got ahead of the test's next packet.
	// mu makes Receive's check and queueing one step against sendUntil's marking and draining.
	mu     sync.Mutex
	resent map[string]bool
}

// testNets holds each test's in-memory network (memnet), created by its first node.
var testNets sync.Map // *testing.T → *memnet.Network

// testNet returns t's in-memory network.
func testNet(t *testing.T) *memnet.Network {
	n, loaded := testNets.LoadOrStore(t, memnet.New())
	if !loaded {
		t.Cleanup(func() { testNets.Delete(t) })
	}
	return n.(*memnet.Network)
}

// newTestNode starts a node on t's in-memory network.
func newTestNode(t *testing.T) *testNode {
	t.Helper()
	pc, err := testNet(t).Listen(netip.MustParseAddrPort("10.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	return newTestNodeOn(t, newTestKey(t), pc)
}

// newUDPTestNode starts a node on a loopback UDP socket, for tests that need the kernel (birthday
// attempts open real sockets).
func newUDPTestNode(t *testing.T) *testNode {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return newTestNodeOn(t, newTestKey(t), pc)
}

func newTestKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestNodeOn starts a node with identity k on pc.
func newTestNodeOn(t *testing.T, k *identity.Key, pc net.PacketConn) *testNode {
	return newTestNodeWith(t, k, pc, nil)
}

// newTestNodeWith starts a node with identity k on pc, passing its streams to accept.
func newTestNodeWith(t *testing.T, k *identity.Key, pc net.PacketConn, accept func(*IncomingStream)) *testNode {
	t.Helper()
	n := &testNode{id: k, got: make(chan []byte, 64), resent: make(map[string]bool)}
	n.key, _ = KeyOf(k.Public())
	var err error
	n.ep, err = New(Config{Key: k, Conn: pc, Logger: testkit.Logger(t, n.key.String()), AcceptStream: accept,
		Receive: func(from Key, pkt []byte) {
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.resent[string(pkt)] {
				return
			}
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

func (n *testNode) info() Info {
	return Info{Key: n.key, Endpoints: []netip.AddrPort{n.ep.LocalAddr()}}
}

// sendUntil retries Send until the link is up and the packet arrives, or fails the test. The copies
// of pkt that arrive later are dropped (testNode.resent).
func sendUntil(t *testing.T, from, to *testNode, pkt []byte) {
	t.Helper()
	to.mu.Lock()
	delete(to.resent, string(pkt)) // sent again: this call waits for a copy
	to.mu.Unlock()
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
			to.dropResent(pkt)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("packet never arrived")
}

// dropResent drops the copies of pkt queued in got and those that arrive from now on.
func (n *testNode) dropResent(pkt []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resent[string(pkt)] = true
	for range len(n.got) {
		if p := <-n.got; !bytes.Equal(p, pkt) {
			n.got <- p // in order: nothing else queues while mu is held
		}
	}
}

func TestLinkCarriesPacketsBothWays(t *testing.T) {
	defer testkit.VerifyNone(t)()
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
}

// waitFor waits until cond holds, failing the test after a minute (virtual under synctest).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, time.Minute, cond, "timed out waiting until %s", what)
}

// TestLinkRecoversAfterOutage: when the path between two peers goes dark for longer than the idle
// timeout, both links go down and both sides search afresh; once the path is back, the ping schedule
// (restarted at its fastest when the link died, backing off to pingMax) finds it within a few
// seconds. In virtual time (synctest) on the in-memory network.
func TestLinkRecoversAfterOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		a.ep.SetPeers([]Info{b.info()})
		b.ep.SetPeers([]Info{a.info()})
		sendUntil(t, a, b, []byte("before"))
		var dark atomic.Bool
		testNet(t).SetFilter(func(from, to netip.AddrPort) bool { return !dark.Load() })
		dark.Store(true)
		cut := time.Now()
		waitFor(t, "both links are down", func() bool {
			return a.ep.Status(b.key).Path == PathNone && b.ep.Status(a.key).Path == PathNone
		})
		if d := time.Since(cut); d < a.ep.cfg.IdleTimeout {
			t.Fatalf("the links went down %v after the path went dark, before the idle timeout (%v)", d, a.ep.cfg.IdleTimeout)
		}
		time.Sleep(time.Minute) // virtual: the ping schedule backs off to pingMax
		dark.Store(false)
		healed := time.Now()
		sendUntil(t, a, b, []byte("after"))
		sendUntil(t, b, a, []byte("and back"))
		took := time.Since(healed)
		t.Logf("link back %v after the path healed", took)
		if max := pingMax*5/4 + time.Second; took > max {
			t.Errorf("link back after %v, want at most %v (one ping interval and a handshake)", took, max)
		}
		if st := a.ep.Status(b.key); st.Path != PathDirect {
			t.Errorf("a's path to b: %+v", st)
		}
	})
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

// TestStrangerIsRefused: a node that does not know us answers no pings, so we never dial it, and a
// dial to it anyway gives no link: its packets are not delivered. In virtual time (synctest).
func TestStrangerIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		a.ep.SetPeers([]Info{b.info()}) // b does not know a
		time.Sleep(time.Minute)         // virtual
		if st := a.ep.Status(b.key); st.Path != PathNone {
			t.Fatalf("a has a link to a stranger: %+v", st)
		}
		// TLS 1.3 lets the client finish before the server has checked its certificate, so the dial
		// may look successful for a moment: b must close it, and take nothing from it.
		if r := a.ep.dial(t.Context(), b.key, PathDirect, b.ep.LocalAddr()); r.err == nil {
			r.conn.SendDatagram([]byte("x"))
			select {
			case <-r.conn.Context().Done():
			case <-time.After(time.Minute):
				t.Fatal("the stranger's link stayed open")
			}
		}
		synctest.Wait()
		select {
		case <-b.got:
			t.Fatal("stranger's packet delivered")
		default:
		}
		if st := b.ep.Status(a.key); st.Path != PathNone {
			t.Errorf("b has a link to a stranger: %+v", st)
		}
	})
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
	pc, err := testNet(t).Listen(netip.MustParseAddrPort("10.0.0.2:0"))
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
	pc2, err := testNet(t).Listen(pc.AddrPort())
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

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
