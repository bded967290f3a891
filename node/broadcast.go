package node

import (
	"net/netip"
	"sync"
	"time"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/peer"
)

// Broadcast and multicast: a packet to 255.255.255.255, to the overlay's broadcast address or to a
// multicast group goes to every peer (they all share a network with us), the way a LAN delivers it,
// and wakes links that wound down; link-local multicast goes over live links only
// (linkLocalMulticast). Each peer's fan-out traffic is rate-limited at every receiver, so one node
// cannot flood a network, and at the sender, so a busy app cannot swamp our own links.

// Broadcast limits per sending peer.
const (
	broadcastRate  = 200 // packets per second
	broadcastBurst = 400
)

// overlay is the overlay's address pools (IPv4 and IPv6), as the first welcome announced them.
type overlay []netip.Prefix

// contains reports whether ip, with or without an IPv6 zone, is an overlay address.
func (o overlay) contains(ip netip.Addr) bool { return inPrefixes(ip, o) }

// fanOut reports whether dst is delivered to every peer rather than one: the limited broadcast
// address, the IPv4 pool's broadcast address or a multicast group.
func (o overlay) fanOut(dst netip.Addr) bool {
	if dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return true
	}
	for _, p := range o {
		if p.Addr().Is4() && dst == lastAddr(p) {
			return true
		}
	}
	return false
}

// inOverlay reports whether ip is an overlay address.
func (n *Node) inOverlay(ip netip.Addr) bool { return n.overlay.contains(ip) }

// linkLocalMulticast reports whether pkt goes to a link-local multicast group (224.0.0.0/24,
// ff02::/16): what operating systems send on their own schedule (mDNS, LLMNR), listened to or not.
// It is peer.Config.Chatter: it neither wakes a peer link that wound down nor keeps one up, or the
// chatter of a TUN-mode node's OS would keep every link awake for ever. Broadcasts and other groups
// do wake links, as a game's "who is hosting?" must reach every player.
func linkLocalMulticast(pkt []byte) bool {
	_, dst, ok := packet.Addrs(pkt)
	return ok && dst.IsLinkLocalMulticast()
}

// fanOut sends pkt to every peer with a link.
func (n *Node) fanOut(pkt []byte) {
	if !n.limits.allow(peer.Key{}) { // our own key slot: the local sender
		n.drops.rateLimited.Add(1)
		return
	}
	for k := range n.routes.Load().peers {
		n.sendq.send(k, pkt, true) // peers without a link are skipped
	}
}

// rateLimiter is a token bucket per sender; the zero Key stands for this node itself.
type rateLimiter struct {
	rate, burst float64

	mu      sync.Mutex
	buckets map[peer.Key]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate, burst float64) *rateLimiter {
	return &rateLimiter{rate: rate, burst: burst, buckets: make(map[peer.Key]*bucket)}
}

// allow takes one token from k's bucket, reporting false if it is empty.
func (l *rateLimiter) allow(k peer.Key) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[k] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops the buckets of peers that are gone, keeping the map as small as the peer map.
func (l *rateLimiter) forget(keep map[peer.Key]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.buckets {
		if k != (peer.Key{}) && !keep[k] {
			delete(l.buckets, k)
		}
	}
}
