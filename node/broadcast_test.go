package node

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-net/warren/peer"
)

// TestRateLimiter runs on synctest's fake clock: a sender gets its burst at once, then the rate;
// senders do not share a bucket, and forget keeps this node's own.
func TestRateLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newRateLimiter(10, 20)
		a, b := peer.Key{1}, peer.Key{2}
		allowed := func(k peer.Key, tries int) int {
			n := 0
			for range tries {
				if l.allow(k) {
					n++
				}
			}
			return n
		}
		if got := allowed(a, 30); got != 20 {
			t.Errorf("burst: %d of 30 allowed, want 20", got)
		}
		if got := allowed(b, 5); got != 5 {
			t.Errorf("another sender: %d of 5 allowed", got)
		}
		time.Sleep(time.Second)
		if got := allowed(a, 30); got != 10 {
			t.Errorf("after a second: %d allowed, want the rate, 10", got)
		}
		time.Sleep(time.Hour)
		if got := allowed(a, 30); got != 20 {
			t.Errorf("after an hour: %d allowed, want no more than the burst, 20", got)
		}
		allowed(peer.Key{}, 1)
		l.forget(map[peer.Key]bool{b: true})
		if _, ok := l.buckets[a]; ok || len(l.buckets) != 2 {
			t.Errorf("after forget: %d buckets, a's kept=%v", len(l.buckets), ok)
		}
	})
}

// TestLogLimiter: at most one line per interval, and the next one says how many were held back.
func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l logLimiter
		if _, ok := l.due(time.Second); !ok {
			t.Fatal("first line held back")
		}
		for range 5 {
			if _, ok := l.due(time.Second); ok {
				t.Fatal("a second line within the interval")
			}
		}
		time.Sleep(time.Second)
		if quiet, ok := l.due(time.Second); !ok || quiet != 5 {
			t.Errorf("after the interval: ok=%v, %d held back, want 5", ok, quiet)
		}
	})
}

func TestOverlay(t *testing.T) {
	o := overlay{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")}
	for ip, want := range map[string][2]bool{ // contains, fanOut
		"100.64.0.2": {true, false}, "100.127.255.255": {true, true}, "255.255.255.255": {false, true},
		"224.0.0.251": {false, true}, "ff02::1": {false, true}, "fd7a:7761:7272::9": {true, false}, "192.0.2.1": {false, false},
	} {
		a := netip.MustParseAddr(ip)
		if got := [2]bool{o.contains(a), o.fanOut(a)}; got != want {
			t.Errorf("%s: contains, fanOut = %v, want %v", ip, got, want)
		}
	}
}

// TestLinkLocalMulticast: only packets to link-local groups are chatter (peer.Config.Chatter); a
// broadcast, a wider multicast group or a unicast packet wakes links as before.
func TestLinkLocalMulticast(t *testing.T) {
	pkt := func(dst string) []byte {
		a := netip.MustParseAddr(dst)
		if a.Is4() {
			b := make([]byte, 20)
			b[0] = 0x45
			copy(b[16:20], a.AsSlice())
			return b
		}
		b := make([]byte, 40)
		b[0] = 0x60
		copy(b[24:40], a.AsSlice())
		return b
	}
	for dst, want := range map[string]bool{
		"224.0.0.251":     true, // mDNS
		"224.0.0.252":     true, // LLMNR
		"ff02::fb":        true,
		"ff02::1:3":       true,
		"255.255.255.255": false,
		"239.255.255.250": false, // SSDP: site scope
		"224.0.2.60":      false,
		"ff05::1:3":       false,
		"100.64.0.7":      false,
	} {
		if got := linkLocalMulticast(pkt(dst)); got != want {
			t.Errorf("linkLocalMulticast(packet to %s) = %v, want %v", dst, got, want)
		}
	}
	for _, b := range [][]byte{nil, {0x45}, make([]byte, 20)} {
		if linkLocalMulticast(b) {
			t.Errorf("linkLocalMulticast(%x) = true for a packet it cannot read", b)
		}
	}
}
