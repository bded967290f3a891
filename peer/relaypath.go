package peer

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/control"
)

// Choosing a relay per peer.
//
// A node is logged in to several relays at once: every standalone relay the coord announces, in the
// announced order, and last the coord's own relay if it offers one (the node tells the Endpoint which
// it is logged in to with SetRelays). A relay forwards only between nodes bound on it, so two peers
// must send through a relay both are logged in to, and must agree on one without the coord: relayed
// tunnels outlive it. Each side applies the same rule, per peer:
//
//   - Answer where you are reached. Send through the relay the peer's packets arrive through: an
//     arrival shows the peer is logged in there (it sent from it).
//   - When in doubt, send through all of them. While there is no such relay (a new link), that relay
//     is no longer one we are logged in to, or we have sent through it for doubtAfter without a
//     packet back through it, every packet goes out once through every relay we are logged in to;
//     QUIC drops the duplicates.
//   - Prefer the earlier relay. An arrival through a relay earlier in the order moves us there at
//     once; one through a later relay only while we are in doubt about the current one. While a
//     relay earlier than the peer's is one we are logged in to, a packet every probeEvery goes out
//     through all of them: if the peer is logged in there too, that copy moves it, and its answers us.
//
// So a link settles on the first relay both ends are logged in to. When that relay dies, each side's
// packets go unanswered (or its login ends) and it sends through all the others; the other side,
// in doubt as well, takes the first of them that delivers, the next relay both share; neither needs
// the coord, nor the other's login state. When the dead relay comes back and both ends are logged
// in to it again, the next probe moves the link back. Peers that share no relay cannot talk through
// one, as before.
//
// The alternatives were worse: "everybody uses the first relay it can log in to" strands a pair when
// one side can reach a relay the other cannot (a relay that blocks one side's address, or is full),
// and flaps whenever the first relay comes and goes, the two sides moving back at different times;
// learning each other's relay through the coord fails exactly when the coord is down.
//
// Arrivals are not authenticated here (QUIC authenticates the payload later), so a relay we are
// logged in to could forge frames "from" a peer. The rule bounds what that buys it: it moves a link
// to itself only if it ranks before the link's relay (the operator prefers it: the link would be on
// it if both peers could use it) or while the link's relay is failing anyway, and then the next
// probe through an earlier relay that works takes the link back.

const (
	// maxRelays bounds the relays a node is logged in to: the announced ones and the coord.
	maxRelays = control.MaxRelays + 1
	// doubtAfter is how long we may send to a peer through its relay without a packet back through
	// it before we send through every relay. QUIC answers an ack-eliciting packet within an RTT plus
	// 25 ms of ACK delay: a healthy link answers well within it.
	doubtAfter = time.Second
	// probeEvery is how often a link that is not on the first relay we are logged in to tries the
	// earlier ones.
	probeEvery = 5 * time.Second
)

// relayPaths is the per-peer relay choice. Safe for concurrent use.
type relayPaths struct {
	relays atomic.Pointer[[]netip.AddrPort] // the relays we are logged in to, best first; nil = none

	// mu guards paths.
	mu    sync.Mutex
	paths map[Key]*relayPath // peers heard from through a relay
}

// relayPath is how one peer is reached through the relays.
type relayPath struct {
	via        netip.AddrPort // the relay its packets arrive through
	unanswered time.Time      // our first send since its last arrival through via; zero = none
	probeAt    time.Time      // when to try the relays earlier than via
}

// doubt reports whether we have sent to the peer through via for doubtAfter without an answer.
func (rp *relayPath) doubt(now time.Time) bool {
	return !rp.unanswered.IsZero() && now.Sub(rp.unanswered) > doubtAfter
}

// set replaces the relays we are logged in to, best first.
func (p *relayPaths) set(relays []netip.AddrPort) {
	r := slices.Clone(relays)
	if len(r) > maxRelays {
		r = r[:maxRelays]
	}
	for i, a := range r {
		r[i] = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	p.relays.Store(&r)
}

// list returns the relays we are logged in to, best first.
func (p *relayPaths) list() []netip.AddrPort {
	if r := p.relays.Load(); r != nil {
		return *r
	}
	return nil
}

// rank returns a relay's place in the order; -1 = not one we are logged in to.
func (p *relayPaths) rank(a netip.AddrPort) int {
	return slices.Index(p.list(), a)
}

// first returns the best relay we are logged in to; zero = none.
func (p *relayPaths) first() netip.AddrPort {
	if l := p.list(); len(l) > 0 {
		return l[0]
	}
	return netip.AddrPort{}
}

// heard records a packet from peer k that arrived through relay via (one we are logged in to) at now.
func (p *relayPaths) heard(k Key, via netip.AddrPort, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paths == nil {
		p.paths = make(map[Key]*relayPath)
	}
	rp := p.paths[k]
	if rp == nil {
		rp = &relayPath{}
		p.paths[k] = rp
	}
	if via == rp.via {
		rp.unanswered = time.Time{}
		return
	}
	if cur := p.rank(rp.via); cur < 0 || p.rank(via) < cur || rp.doubt(now) {
		rp.via, rp.unanswered, rp.probeAt = via, time.Time{}, now.Add(probeEvery)
	}
}

// route puts the relays a packet to peer k goes through at now into to and returns how many: its
// relay, or every relay we are logged in to when in doubt or probing; 0 = none.
func (p *relayPaths) route(k Key, now time.Time, to *[maxRelays]netip.AddrPort) int {
	p.mu.Lock()
	if rp := p.paths[k]; rp != nil {
		if rp.unanswered.IsZero() {
			rp.unanswered = now
		}
		cur := p.rank(rp.via)
		probe := cur > 0 && !now.Before(rp.probeAt)
		if probe {
			rp.probeAt = now.Add(probeEvery)
		}
		if !probe && !rp.doubt(now) && cur >= 0 {
			to[0] = rp.via
			p.mu.Unlock()
			return 1
		}
	}
	p.mu.Unlock()
	return copy(to[:], p.list())
}

// current returns the relay peer k is reached through now; zero = none chosen yet.
func (p *relayPaths) current(k Key) netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rp := p.paths[k]; rp != nil && p.rank(rp.via) >= 0 {
		return rp.via
	}
	return netip.AddrPort{}
}

// retain forgets the peers for which keep is false (they left the peer set).
func (p *relayPaths) retain(keep func(Key) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.paths {
		if !keep(k) {
			delete(p.paths, k)
		}
	}
}
