package packet

import (
	"net/netip"
	"sync"
	"time"
)

// FlowKey is one flow as seen from this host: local and remote address and port. ICMP echo flows
// use the identifier as the local port; a zero remote stands for "any peer" (replies to a broadcast).
type FlowKey struct {
	Proto         uint8
	Local, Remote netip.Addr
	LPort, RPort  uint16
}

// OutboundFlow is the flow a packet leaving this host opens or continues; fanOut says it goes to a
// broadcast or multicast address, which opens a flow from any peer. Fragments, ICMP echo replies
// (this host answers, it does not ask) and RSTs open nothing.
func (p *Packet) OutboundFlow(fanOut bool) (FlowKey, bool) {
	switch {
	case p.Fragment:
		return FlowKey{}, false
	case p.Proto == ProtoTCP:
		if p.TCPFlags&TCPRST != 0 {
			return FlowKey{}, false
		}
		return FlowKey{Proto: p.Proto, Local: p.Src, Remote: p.Dst, LPort: p.SPort, RPort: p.DPort}, true
	case p.Proto == ProtoUDP:
		if fanOut {
			return FlowKey{Proto: p.Proto, Local: p.Src, LPort: p.SPort}, true
		}
		return FlowKey{Proto: p.Proto, Local: p.Src, Remote: p.Dst, LPort: p.SPort, RPort: p.DPort}, true
	case p.ICMPEcho && !p.ICMPReply:
		return FlowKey{Proto: p.Proto, Local: p.Src, Remote: p.Dst, LPort: p.SPort}, true
	}
	return FlowKey{}, false
}

// InboundFlow is the flow an arriving packet would belong to.
func (p *Packet) InboundFlow() FlowKey {
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		return FlowKey{Proto: p.Proto, Local: p.Dst, Remote: p.Src, LPort: p.DPort}
	}
	return FlowKey{Proto: p.Proto, Local: p.Dst, Remote: p.Src, LPort: p.DPort, RPort: p.SPort}
}

// WildcardFlow is the "any peer" flow an arriving UDP reply to a broadcast would belong to.
func (p *Packet) WildcardFlow() FlowKey {
	return FlowKey{Proto: p.Proto, Local: p.Dst, LPort: p.DPort}
}

// Flow table limits: idle times after which a flow is forgotten (TCP as RFC 5382's NAT minimum,
// UDP a bit over RFC 4787's two minutes), and the sweeps that forget them.
const (
	IdleTCP      = 2*time.Hour + 4*time.Minute
	IdleUDP      = 3 * time.Minute
	IdleICMP     = 30 * time.Second
	sweepEvery   = 30 * time.Second
	flowsPerScan = 4096 // entries looked at per eviction scan when the table is full
)

// FlowTable remembers recent flows and an owner byte for each (which the caller defines). Bounded:
// when full, expired flows go first, then arbitrary ones (a lost flow only costs its connection).
// Safe for concurrent use.
type FlowTable struct {
	max   int
	start time.Time // seen times are offsets from it (monotonic)

	// mu guards the following.
	mu        sync.Mutex
	m         map[FlowKey]flowState
	lastSweep time.Duration
}

type flowState struct {
	owner uint8
	seen  time.Duration
}

// NewFlowTable returns an empty table of at most max flows.
func NewFlowTable(max int) *FlowTable {
	return &FlowTable{max: max, start: time.Now(), m: make(map[FlowKey]flowState)}
}

func idleFor(proto uint8) time.Duration {
	switch proto {
	case ProtoTCP:
		return IdleTCP
	case ProtoUDP:
		return IdleUDP
	}
	return IdleICMP
}

// Track records (or refreshes) flow k as owned by owner.
func (t *FlowTable) Track(k FlowKey, owner uint8) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[k]; !ok {
		if now-t.lastSweep > sweepEvery {
			t.sweepLocked(now, len(t.m))
		}
		if len(t.m) >= t.max {
			t.sweepLocked(now, flowsPerScan)
		}
		if len(t.m) >= t.max {
			for old := range t.m { // map order is arbitrary: evict one
				delete(t.m, old)
				break
			}
		}
	}
	t.m[k] = flowState{owner: owner, seen: now}
}

// Lookup returns k's owner and refreshes it, if k is known and not expired.
func (t *FlowTable) Lookup(k FlowKey) (uint8, bool) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[k]
	if !ok {
		return 0, false
	}
	if now-f.seen > idleFor(k.Proto) {
		delete(t.m, k)
		return 0, false
	}
	f.seen = now
	t.m[k] = f
	return f.owner, true
}

// sweepLocked deletes expired flows among at most limit entries.
func (t *FlowTable) sweepLocked(now time.Duration, limit int) {
	t.lastSweep = now
	for k, f := range t.m {
		if limit--; limit < 0 {
			return
		}
		if now-f.seen > idleFor(k.Proto) {
			delete(t.m, k)
		}
	}
}

// Len returns the number of flows in the table, expired ones not yet swept included.
func (t *FlowTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
