package peer

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestLinkIdleWindsDownAndWakes, in virtual time: a direct link that carries nothing for LinkIdle
// winds down on both sides (PathIdle), after which neither side sends a single packet, however long
// it stays idle. The first packet wakes it: Send refuses that one with ErrLinkWaking, WaitLink
// returns once the relay link is up (at once, not after RelayDelay), the next packet arrives, and
// the pair moves back to the direct path. A stream dialed by the other side wakes it the same way.
func TestLinkIdleWindsDownAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		const linkIdle = 30 * time.Second
		for _, n := range []*testNode{a, b} {
			n.ep.cfg.LinkIdle = linkIdle
		}
		relay := startTestRelay(t, a, b)
		var sent atomic.Int64 // packets from a or b, to anyone
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
