package relay

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

func key(b byte) Key { return Key{b} }

func set(keys ...Key) *KeySet {
	s := NewKeySet(keys)
	return &s
}

func TestKeySet(t *testing.T) {
	s := NewKeySet([]Key{key(3), key(1), key(3), key(2)})
	if len(s) != 3 {
		t.Fatalf("set of %d keys, want 3 (deduplicated)", len(s))
	}
	for _, k := range []Key{key(1), key(2), key(3)} {
		if !s.Allows(k) {
			t.Errorf("set does not allow %x", k[0])
		}
	}
	if s.Allows(key(4)) || KeySet(nil).Allows(key(1)) {
		t.Error("set allows a key it does not hold")
	}
}

func TestRouteRules(t *testing.T) {
	tb := NewTable(1000)
	aAddr, bAddr, cAddr := netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.2:2000"), netip.MustParseAddrPort("192.0.2.3:3000")
	a := tb.Bind(key(1), aAddr, set(key(2), key(3)))
	tb.Bind(key(2), bAddr, set(key(1)))
	tb.Bind(key(3), cAddr, set(key(2))) // c names b, not a

	to, src, ok := tb.Route(aAddr, key(2))
	if !ok || src != key(1) || to.AddrPort() != bAddr {
		t.Fatalf("a→b = %v %x %v, want b's address with a's key", to, src[0], ok)
	}
	if _, _, ok := tb.Route(bAddr, key(1)); !ok {
		t.Error("b→a refused: both name each other")
	}
	if _, _, ok := tb.Route(aAddr, key(3)); ok {
		t.Error("a→c forwarded, but c does not name a")
	}
	if _, _, ok := tb.Route(cAddr, key(1)); ok {
		t.Error("c→a forwarded, c does not name a")
	}
	if _, _, ok := tb.Route(cAddr, key(2)); ok {
		t.Error("c→b forwarded, but b does not name c")
	}
	if _, _, ok := tb.Route(netip.MustParseAddrPort("192.0.2.9:9"), key(2)); ok {
		t.Error("a frame from an address with no bound node was forwarded")
	}
	if _, _, ok := tb.Route(aAddr, key(9)); ok {
		t.Error("a frame to a node that is not bound was forwarded")
	}
	self := tb.Bind(key(5), netip.MustParseAddrPort("192.0.2.5:5"), set(key(5)))
	if _, _, ok := tb.Route(tb.Addr(self), key(5)); ok {
		t.Error("a node's frame to itself was forwarded")
	}

	// Roaming: a's binding follows its connection; the old address speaks for nobody.
	moved := netip.MustParseAddrPort("198.51.100.1:4000")
	tb.Move(a, moved)
	if _, _, ok := tb.Route(aAddr, key(2)); ok {
		t.Error("a's old address still speaks for it after the move")
	}
	if to, _, ok := tb.Route(bAddr, key(1)); !ok || to.AddrPort() != moved {
		t.Errorf("b→a goes to %v (%v), want a's new address %v", to, ok, moved)
	}

	// A newer login of a key replaces the older binding; unbinding the old one changes nothing.
	a2 := tb.Bind(key(1), aAddr, set(key(2)))
	if _, _, ok := tb.Route(moved, key(2)); ok {
		t.Error("the replaced login's address still speaks for the key")
	}
	if tb.Unbind(a) {
		t.Error("Unbind of a replaced member reported it bound")
	}
	tb.Move(a, moved) // a stale session's move must not steal the binding back
	if to, _, ok := tb.Route(bAddr, key(1)); !ok || to.AddrPort() != aAddr {
		t.Errorf("b→a after re-login goes to %v (%v), want %v", to, ok, aAddr)
	}
	// Another key logging in from a's address takes it over: a is no longer reachable there.
	a3 := tb.Bind(key(6), aAddr, set(key(2)))
	if _, _, ok := tb.Route(bAddr, key(1)); ok {
		t.Error("frames still go to a at an address another node logged in from")
	}
	if tb.Unbind(a2) || !tb.Unbind(a3) || tb.Len() != 3 {
		t.Errorf("after unbinding a: %d bound, want 3", tb.Len())
	}
	if _, _, ok := tb.Route(bAddr, key(1)); ok {
		t.Error("frame forwarded to a node that logged out")
	}
}

// TestRouteRateLimit, in virtual time (synctest): the limiter's clock stands still while the frames
// go, so a machine that stalls the loop cannot refill it.
func TestRouteRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(100) // burst 11
		aAddr := netip.MustParseAddrPort("192.0.2.1:1000")
		tb.Bind(key(1), aAddr, set(key(2)))
		tb.Bind(key(2), netip.MustParseAddrPort("192.0.2.2:2000"), set(key(1)))
		route := func(n int) (passed int) {
			for range n {
				if _, _, ok := tb.Route(aAddr, key(2)); ok {
					passed++
				}
			}
			return passed
		}
		if passed := route(50); passed != 11 {
			t.Errorf("%d of 50 back-to-back frames passed, want the burst of 11", passed)
		}
		time.Sleep(100 * time.Millisecond) // virtual: 10 frames' worth at 100 a second
		if passed := route(50); passed != 10 {
			t.Errorf("%d of 50 frames passed 100 ms later, want 10", passed)
		}
	})
}

func TestRouteAllocs(t *testing.T) {
	tb := NewTable(1 << 30)
	aAddr := netip.MustParseAddrPort("192.0.2.1:1000")
	tb.Bind(key(1), aAddr, set(key(2)))
	tb.Bind(key(2), netip.MustParseAddrPort("192.0.2.2:2000"), set(key(1)))
	if n := testing.AllocsPerRun(1000, func() { tb.Route(aAddr, key(2)) }); n != 0 {
		t.Errorf("Route allocates %v times per frame, want 0", n)
	}
}
