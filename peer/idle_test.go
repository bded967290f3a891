package peer

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// directIdlePair starts two nodes with LinkIdle linkIdle and Config.Chatter chatter, both logged in to
// a relay, waits until they have a direct link and sends one packet over it. sent counts the packets
// a or b send from then on (and before), to anyone. Inside a synctest bubble.
func directIdlePair(t *testing.T, linkIdle time.Duration, chatter func([]byte) bool) (a, b *testNode, sent *atomic.Int64) {
	t.Helper()
	a, b = newTestNode(t), newTestNode(t)
	for _, n := range []*testNode{a, b} {
		n.ep.cfg.LinkIdle, n.ep.cfg.Chatter = linkIdle, chatter
	}
	relay := startTestRelay(t, a, b)
	sent = new(atomic.Int64)
	testNet(t).SetFilter(func(from, to netip.AddrPort) bool {
		if from == a.ep.LocalAddr() || from == b.ep.LocalAddr() {
			sent.Add(1)
		}
		return true
	})
	for _, n := range []*testNode{a, b} {
		n.ep.SetRelays([]netip.AddrPort{relay})
	}
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	waitPath(t, a, b, PathDirect)
	sendUntil(t, a, b, []byte("before"))
	return a, b, sent
}

// TestLinkIdleWindsDownAndWakes, in virtual time: a direct link that carries nothing for LinkIdle
// winds down on both sides (PathIdle), after which neither side sends a single packet, however long
// it stays idle. The first packet wakes it: Send refuses that one with ErrLinkWaking, WaitLink
// returns once the relay link is up (at once, not after RelayDelay), the next packet arrives, and
// the pair moves back to the direct path. A stream dialed by the other side wakes it the same way.
func TestLinkIdleWindsDownAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const linkIdle = 30 * time.Second
		a, b, sent := directIdlePair(t, linkIdle, nil)

		took := waitPath(t, a, b, PathIdle)
		if took < linkIdle || took > linkIdle+2*directCheck {
			t.Fatalf("wound down %v after the last packet, want just after LinkIdle (%v)", took, linkIdle)
		}
		before := sent.Load()
		time.Sleep(10 * time.Minute) // virtual time: synctest's clock jumps once every goroutine waits
		synctest.Wait()
		if n := sent.Load() - before; n != 0 {
			t.Fatalf("%d packets sent in 10 minutes while dormant, want none", n)
		}
		if a.ep.Status(b.key).Path != PathIdle || b.ep.Status(a.key).Path != PathIdle {
			t.Fatalf("paths %v / %v after 10 idle minutes, want idle", a.ep.Status(b.key), b.ep.Status(a.key))
		}

		start := time.Now()
		if err := a.ep.Send(b.key, []byte("wakes it")); !errors.Is(err, ErrLinkWaking) || !errors.Is(err, ErrNoLink) {
			t.Fatalf("Send to a dormant peer: %v, want ErrLinkWaking", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.ep.WaitLink(ctx, b.key); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took >= a.ep.cfg.RelayDelay {
			t.Fatalf("link back after %v, want before RelayDelay (%v): the waking side dials the relay at once", took, a.ep.cfg.RelayDelay)
		}
		if err := a.ep.Send(b.key, []byte("after")); err != nil {
			t.Fatalf("Send once the link is back: %v", err)
		}
		if got := string(<-b.got); got != "after" {
			t.Fatalf("b got %q, want %q", got, "after")
		}
		waitPath(t, a, b, PathDirect)

		// Idle again; this time b's stream wakes it.
		waitPath(t, a, b, PathIdle)
		s, err := b.ep.DialStream(ctx, a.key, StreamHeader{})
		if err == nil {
			s.Close()
		}
		if st := a.ep.Status(b.key).Path; st == PathIdle || st == PathNone {
			t.Fatalf("a's path after b dialed a stream: %v (dial: %v)", st, err)
		}
	})
}

// TestChatterNeitherKeepsNorWakesLinks, in virtual time: packets Config.Chatter reports (the node's:
// link-local multicast) flow over a live link but do not keep it up: with chatter every 5 s both
// ways, the link still winds down LinkIdle after the last real packet. A dormant link stays asleep
// when chatter is sent to it (ErrNoLink, not ErrLinkWaking) and nothing goes on the wire.
func TestChatterNeitherKeepsNorWakesLinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const linkIdle = 30 * time.Second
		a, b, sent := directIdlePair(t, linkIdle, func(pkt []byte) bool { return string(pkt) == "chatter" })
		last := time.Now()

		stop, stopped := make(chan struct{}), make(chan struct{})
		var once sync.Once
		halt := func() { once.Do(func() { close(stop) }); <-stopped }
		defer halt() // also when the test fails before the chatter ends
		var delivered atomic.Int32
		go func() { // chatter both ways every 5 s, for at most 5 minutes
			defer close(stopped)
			for range 60 {
				a.ep.Send(b.key, []byte("chatter"))
				b.ep.Send(a.key, []byte("chatter"))
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Second):
				}
				for _, n := range []*testNode{a, b} {
					for len(n.got) > 0 {
						if string(<-n.got) == "chatter" {
							delivered.Add(1)
						}
					}
				}
			}
		}()
		waitPath(t, a, b, PathIdle)
		halt()
		if took := time.Since(last); took > linkIdle+2*directCheck {
			t.Fatalf("wound down %v after the last real packet, want just after LinkIdle (%v): chatter kept it up", took, linkIdle)
		}
		if delivered.Load() == 0 {
			t.Fatal("no chatter delivered while the link was up")
		}

		synctest.Wait()
		before := sent.Load()
		if err := a.ep.Send(b.key, []byte("chatter")); !errors.Is(err, ErrNoLink) || errors.Is(err, ErrLinkWaking) {
			t.Fatalf("chatter to a dormant peer: %v, want ErrNoLink and no wake-up", err)
		}
		time.Sleep(time.Minute) // virtual time
		synctest.Wait()
		if n := sent.Load() - before; n != 0 {
			t.Fatalf("%d packets sent after chatter to a dormant peer, want none", n)
		}
		if a.ep.Status(b.key).Path != PathIdle || b.ep.Status(a.key).Path != PathIdle {
			t.Fatalf("paths %v / %v after chatter, want idle", a.ep.Status(b.key), b.ep.Status(a.key))
		}
	})
}

// TestStreamAfterWakeRidesDirect, in virtual time: a stream that wakes a link which wound down on
// the direct path waits for the direct link instead of riding the relay link that comes up first
// (streams never move between links, so it would stay on the relay for its whole life). When the
// direct path is gone for good, the stream takes the relay link after the bounded wait.
func TestStreamAfterWakeRidesDirect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const linkIdle = 30 * time.Second
		a, b, _ := directIdlePair(t, linkIdle, nil)
		a.ep.cfg.AcceptStream = func(s *IncomingStream) {
			if c, err := s.Accept(); err == nil {
				io.Copy(c, c)
				c.Close()
			}
		}
		dial := func(want string, timeout time.Duration) time.Duration {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			c, err := b.ep.DialStream(ctx, a.key, StreamHeader{Proto: ProtoTCP, Port: 22})
			if err != nil {
				t.Fatalf("stream that wakes the link: %v", err)
			}
			defer c.Close()
			took := time.Since(start)
			if got := c.(*streamConn).link.path; got != want {
				t.Fatalf("the stream that woke the link rides the %s link, want %s", got, want)
			}
			if err := echo(c, "after the idle spell"); err != nil {
				t.Fatal(err)
			}
			return took
		}
		waitPath(t, a, b, PathIdle)
		dial(PathDirect, time.Minute)

		waitPath(t, a, b, PathIdle)
		direct := func(x, y netip.AddrPort) bool {
			return x == a.ep.LocalAddr() && y == b.ep.LocalAddr() || x == b.ep.LocalAddr() && y == a.ep.LocalAddr()
		}
		testNet(t).SetFilter(func(from, to netip.AddrPort) bool { return !direct(from, to) })
		if took := dial(PathRelay, time.Minute); took < interimWait(0) || took > maxInterimWait+time.Second {
			t.Fatalf("with the direct path gone the stream took the relay link after %v, want after %v and at most about %v",
				took, interimWait(0), maxInterimWait)
		}

		// A dial with little time keeps half of it for the relay link: it takes the interim link
		// halfway to its deadline, not at the end of the wait, and still gets through.
		testNet(t).SetFilter(nil)
		waitPath(t, a, b, PathDirect)
		waitPath(t, a, b, PathIdle)
		testNet(t).SetFilter(func(from, to netip.AddrPort) bool { return !direct(from, to) })
		const short = 80 * time.Millisecond
		if took := dial(PathRelay, short); took > short*3/4 {
			t.Fatalf("a dial with %v took the interim relay link after %v, want by halfway", short, took)
		}
	})
}
