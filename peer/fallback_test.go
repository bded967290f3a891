package peer

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-net/warren/control"
)

// startTestRelay runs a relay on t's in-memory network that forwards frames between the given
// nodes, as coord/relay does between logged-in nodes (which here the test stands in for).
func startTestRelay(t *testing.T, nodes ...*testNode) netip.AddrPort {
	t.Helper()
	c, err := testNet(t).Listen(netip.MustParseAddrPort("10.0.0.9:7401"))
	if err != nil {
		t.Fatal(err)
	}
	addrOf := map[Key]netip.AddrPort{}
	keyOf := map[netip.AddrPort]Key{}
	for _, n := range nodes {
		addrOf[n.key], keyOf[n.ep.LocalAddr()] = n.ep.LocalAddr(), n.key
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		var out []byte
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			kind, to, payload, err := control.ParseRelay(buf[:n])
			src, known := keyOf[from.(*net.UDPAddr).AddrPort()]
			if err != nil || kind != control.KindRelayTo || !known {
				continue
			}
			k, _ := KeyOf(to)
			if dst, ok := addrOf[k]; ok {
				out = control.AppendRelay(out[:0], control.KindRelayFrom, src[:], payload)
				c.WriteTo(out, net.UDPAddrFromAddrPort(dst))
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.AddrPort()
}

// waitPath waits until both nodes see path to each other, and returns how long that took.
func waitPath(t *testing.T, a, b *testNode, path string) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, "both sides are on the "+path+" path", func() bool {
		return a.ep.Status(b.key).Path == path && b.ep.Status(a.key).Path == path
	})
	return time.Since(start)
}

// TestRelayFallbackAndBack plays the path finding against a path that comes and goes, in virtual
// time: with the direct path dark from the start the pair meets on the relay RelayDelay after it
// appears; when the direct path opens the link moves there; when it goes dark again the stalled link
// (packets go out, nothing comes back) falls back to the relay within seconds, long before the idle
// timeout, and the side that saw the stall told its owner (Config.OnStall: the node nudges the coord).
func TestRelayFallbackAndBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		var stalls atomic.Int32
		a.ep.cfg.OnStall = func() { stalls.Add(1) } // before SetPeers: no path loop turn reads it yet
		relay := startTestRelay(t, a, b)
		var dark atomic.Bool // the direct path between a and b drops everything
		direct := func(x, y netip.AddrPort) bool {
			return x == a.ep.LocalAddr() && y == b.ep.LocalAddr() || x == b.ep.LocalAddr() && y == a.ep.LocalAddr()
		}
		testNet(t).SetFilter(func(from, to netip.AddrPort) bool { return !dark.Load() || !direct(from, to) })
		dark.Store(true)
		for _, n := range []*testNode{a, b} {
			n.ep.SetRelays([]netip.AddrPort{relay})
		}
		a.ep.SetPeers([]Info{b.info()})
		b.ep.SetPeers([]Info{a.info()})

		took := waitPath(t, a, b, PathRelay)
		t.Logf("relayed after %v", took)
		if took < a.ep.cfg.RelayDelay || took > a.ep.cfg.RelayDelay+500*time.Millisecond {
			t.Fatalf("relayed after %v, want just after RelayDelay (%v)", took, a.ep.cfg.RelayDelay)
		}
		sendUntil(t, a, b, []byte("through the relay"))
		sendUntil(t, b, a, []byte("and back"))

		dark.Store(false)
		took = waitPath(t, a, b, PathDirect)
		t.Logf("direct %v after the path opened", took)
		if max := relayedPingSlow * pingMax * 5 / 4; took > max { // one relayed ping interval at most
			t.Fatalf("direct only %v after the path opened, want within %v", took, max)
		}
		sendUntil(t, a, b, []byte("direct"))

		if n := stalls.Load(); n != 0 {
			t.Fatalf("OnStall called %d times before the direct path went dark", n)
		}
		// Dark while both sides keep sending (as TCP through the link would: a stall is seen by the
		// side that sends, and only the dialer falls back).
		dark.Store(true)
		start := time.Now()
		stop, stopped := make(chan struct{}), make(chan struct{})
		defer func() {
			close(stop)
			<-stopped
		}()
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					b.ep.Send(a.key, []byte("from b"))
				}
			}
		}()
		sendUntil(t, a, b, []byte("through the relay again"))
		took = time.Since(start)
		t.Logf("back on the relay %v after the direct path went dark", took)
		waitPath(t, a, b, PathRelay)
		// Worst case, turn by turn: the first turn after the dark (up to directCheck away) may still
		// see packets that came in before it; the next, directCheckBusy later, sees packets go out
		// unanswered; stallMin after that (memnet's round trips are fast) the loop wakes, finds the
		// link stalled and rechecks it; RelayDelay later it wakes again, and the dialer gives up on
		// the link and dials the relay. The last second is slack for a loaded machine.
		if min, max := stallMin+a.ep.cfg.RelayDelay, directCheck+directCheckBusy+stallMin+a.ep.cfg.RelayDelay+time.Second; took < min || took > max {
			t.Fatalf("back on the relay after %v, want between %v and %v (idle timeout %v)", took, min, max, a.ep.cfg.IdleTimeout)
		}
		if stalls.Load() == 0 {
			t.Error("the direct link stalled and fell back, but OnStall was never called")
		}
	})
}
