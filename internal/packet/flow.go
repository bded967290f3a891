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
// UDP a bit over RFC 4787's two minutes; a TCP flow that saw a FIN or RST as Linux conntrack's
// TIME_WAIT), and the sweeps that forget them.
const (
	IdleTCP       = 2*time.Hour + 4*time.Minute
	IdleTCPClosed = 2 * time.Minute
	IdleUDP       = 3 * time.Minute
	IdleICMP      = 30 * time.Second
	sweepEvery    = 30 * time.Second
	flowsPerScan  = 4096 // entries looked at per eviction scan when the table is full
	// remoteShare: one remote address may hold at most 1/remoteShare of the table, so a peer that
	// opens flow after flow (SYNs to an exposed port from every source port) evicts its own flows,
	// not everyone's.
	remoteShare = 8
)

// FlowTable remembers recent flows and an owner byte for each (which the caller defines). Bounded:
// when full, expired flows go first, then arbitrary ones (a lost flow only costs its connection);
// and per remote address, whose oldest flows make room for its new ones. Safe for concurrent use.
type FlowTable struct {
	max, maxPerRemote int
	start             time.Time // seen times are offsets from it (monotonic)

	// mu guards the following.
	mu        sync.Mutex
	m         map[FlowKey]flowState
	perRemote map[netip.Addr]int // flows in m by remote address (the zero address: "any peer" flows)
	lastSweep time.Duration
}

type flowState struct {
	owner  uint8
	closed bool // TCP: a FIN or RST went by (TCPSegment)
	seen   time.Duration
}

// NewFlowTable returns an empty table of at most size flows.
func NewFlowTable(size int) *FlowTable {
	return &FlowTable{max: size, maxPerRemote: max(1, size/remoteShare), start: time.Now(),
		m: make(map[FlowKey]flowState), perRemote: make(map[netip.Addr]int)}
}

func (f flowState) idleFor(proto uint8) time.Duration {
	switch {
	case proto == ProtoTCP && f.closed:
		return IdleTCPClosed
	case proto == ProtoTCP:
		return IdleTCP
	case proto == ProtoUDP:
		return IdleUDP
	}
	return IdleICMP
}

// Track records (or refreshes) flow k as owned by owner. A flow whose remote address holds its
// share of the table replaces that remote's least recently seen flow among those a scan finds, or,
// if the scan finds none, is not recorded.
func (t *FlowTable) Track(k FlowKey, owner uint8) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[k]
	if !ok {
		if now-t.lastSweep > sweepEvery {
			t.sweepLocked(now, len(t.m))
		}
		if t.perRemote[k.Remote] >= t.maxPerRemote && !t.evictRemoteLocked(k.Remote) {
			return
		}
		if len(t.m) >= t.max {
			t.sweepLocked(now, flowsPerScan)
		}
		if len(t.m) >= t.max {
			for old := range t.m { // map order is arbitrary: evict one
				t.deleteLocked(old)
				break
			}
		}
		t.perRemote[k.Remote]++
	}
	f.owner, f.seen = owner, now
	t.m[k] = f
}

// TCPSegment notes what a TCP segment of flow k with flags does to the flow, if it is tracked: a FIN
// or RST closes it (it is forgotten IdleTCPClosed after its last packet, not IdleTCP), a SYN without
// ACK opens it afresh (a new connection on the same addresses and ports). Callers pass only segments
// with one of those flags.
func (t *FlowTable) TCPSegment(k FlowKey, flags uint8) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[k]
	if !ok {
		return
	}
	switch {
	case flags&(TCPFIN|TCPRST) != 0:
		f.closed = true
	case flags&(TCPSYN|TCPACK) == TCPSYN:
		f.closed = false
	}
	t.m[k] = f
}

// deleteLocked forgets flow k.
func (t *FlowTable) deleteLocked(k FlowKey) {
	if _, ok := t.m[k]; !ok {
		return
	}
	delete(t.m, k)
	if t.perRemote[k.Remote]--; t.perRemote[k.Remote] <= 0 {
		delete(t.perRemote, k.Remote)
	}
}

// evictRemoteLocked forgets the least recently seen of the first 8 flows of remote a scan meets (a
// sample, as Redis evicts: the remote holds a share of the table, so the scan is short), and reports
// whether it found one.
func (t *FlowTable) evictRemoteLocked(remote netip.Addr) bool {
	var oldest FlowKey
	found, limit := 0, flowsPerScan
	for k, f := range t.m {
		if limit--; limit < 0 || found == 8 {
			break
		}
		if k.Remote == remote {
			if found == 0 || f.seen < t.m[oldest].seen {
				oldest = k
			}
			found++
		}
	}
	if found > 0 {
		t.deleteLocked(oldest)
	}
	return found > 0
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
	if now-f.seen > f.idleFor(k.Proto) {
		t.deleteLocked(k)
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
		if now-f.seen > f.idleFor(k.Proto) {
			t.deleteLocked(k)
		}
	}
}

// Len returns the number of flows in the table, expired ones not yet swept included.
func (t *FlowTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
