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
//     arrival proves the peer is logged in there (it sent from it).
//   - When in doubt, send through all of them. While there is no such relay (a new link), that relay
//     is no longer one we are logged in to, or we have sent for doubtAfter without a packet back,
//     every packet goes out once through every relay we are logged in to; QUIC drops the duplicates.
//   - Prefer the earlier relay. An arrival through a relay earlier in the order moves us there at
//     once; one through a later relay only once the current one has been silent for switchAfter (the
//     peer moved away from it).
//
// So a link settles on the first relay both ends are logged in to. When that relay dies, the first
// side to notice (its login ends, or its packets go unanswered for doubtAfter) sends through all the
// others; the other side hears it through the next shared relay and follows within switchAfter;
// neither needs the coord, nor the other's login state. When a node logs in to a relay earlier in the
// order than a peer's, its next packet to that peer goes through all relays once; if the peer is
// logged in there too, that copy moves it back at once, and its answers move us (else the peer's own
// login there, later, does the same the other way round). Peers that share no relay cannot talk
// through one, as before.
//
// The alternatives were worse: "everybody uses the first relay it can log in to" strands a pair when
// one side can reach a relay the other cannot (a relay that blocks one side's address, or is full),
// and flaps whenever the first relay comes and goes, the two sides moving back at different times;
// learning each other's relay through the coord fails exactly when the coord is down.

const (
	// maxRelays bounds the relays a node is logged in to: the announced ones and the coord.
	maxRelays = control.MaxRelays + 1
	// doubtAfter is how long we may send to a peer through its relay without a packet back before
	// we send through every relay. QUIC answers an ack-eliciting packet within an RTT plus 25 ms of
	// ACK delay; an idle link's keep-alive a few seconds after our last ACK also counts as a doubt,
	// which costs one keep-alive copy per relay and moves the link back to a better relay.
	doubtAfter = time.Second
	// switchAfter is how long a peer's relay must have been silent before an arrival through a later
	// relay moves us there.
	switchAfter = time.Second
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
	heard      time.Time      // when one last arrived through via
	unanswered time.Time      // our first send since its last arrival; zero = none
	probe      bool           // we logged in to a relay better than via: send the next packet through all
}

// set replaces the relays we are logged in to, best first. A peer reached through a relay that now
// has a new one before it gets its next packet through all of them (probe).
func (p *relayPaths) set(relays []netip.AddrPort) {
	r := slices.Clone(relays)
	if len(r) > maxRelays {
		r = r[:maxRelays]
	}
	for i, a := range r {
		r[i] = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.list()
	p.relays.Store(&r)
	for _, rp := range p.paths {
		if i := slices.Index(r, rp.via); i > 0 {
			for _, better := range r[:i] {
				if !slices.Contains(old, better) {
					rp.probe = true
				}
			}
		}
	}
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
	rp.unanswered = time.Time{}
	switch cur := p.rank(rp.via); {
	case via == rp.via:
		rp.heard = now
	case cur < 0 || p.rank(via) < cur || now.Sub(rp.heard) > switchAfter:
		rp.via, rp.heard = via, now
	}
}

// route puts the relays a packet to peer k goes through at now into to and returns how many: its
// relay, or every relay we are logged in to when in doubt; 0 = none.
func (p *relayPaths) route(k Key, now time.Time, to *[maxRelays]netip.AddrPort) int {
	p.mu.Lock()
	if rp := p.paths[k]; rp != nil {
		if rp.unanswered.IsZero() {
			rp.unanswered = now
		}
		probe := rp.probe
		rp.probe = false
		if !probe && now.Sub(rp.unanswered) <= doubtAfter && p.rank(rp.via) >= 0 {
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
