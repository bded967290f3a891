package peer

import (
	"time"

	"github.com/warren-net/warren/control"
)

// Paths lists every path a link can take, for metrics that show each one (at 0 when unused). A new
// path constant belongs here too.
var Paths = []string{PathDirect, PathRelay, PathRelayTCP}

// Traffic is what the links of one path carried: QUIC packets and their bytes (without UDP and IP
// headers), including retransmissions, keep-alives and path probing.
type Traffic struct {
	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64
}

func (t *Traffic) add(st trafficSource) {
	t.BytesSent += st.BytesSent
	t.BytesReceived += st.BytesReceived
	t.PacketsSent += st.PacketsSent
	t.PacketsReceived += st.PacketsReceived
}

// Punches counts direct dials (hole punching's last step, after a ping to the peer was answered)
// made as the dialing side of a pair, and how they ended.
type Punches struct {
	Attempts  uint64 // direct dials started
	Succeeded uint64 // a direct link came up
	Failed    uint64 // the dial failed (timeout, handshake refused)
}

// Stats is a snapshot of the Endpoint's links, for metrics. No entry names a peer.
type Stats struct {
	// Traffic is by path, over every link the Endpoint has had (closed ones included): each value
	// only grows.
	Traffic map[string]Traffic
	// RTT holds the smoothed round-trip time of each peer's current link, by path.
	RTT map[string][]time.Duration
	// Punches is by the peer's NAT mapping behaviour as it reported it ("" = unknown).
	Punches map[control.Mapping]Punches
}

// trafficSource is the part of quic.ConnectionStats Traffic adds up.
type trafficSource struct {
	BytesSent, BytesReceived, PacketsSent, PacketsReceived uint64
}

func (l *link) traffic() trafficSource {
	st := l.conn.ConnectionStats()
	return trafficSource{st.BytesSent, st.BytesReceived, st.PacketsSent, st.PacketsReceived}
}

// Stats returns the Endpoint's link counters.
func (e *Endpoint) Stats() Stats {
	st := Stats{Traffic: make(map[string]Traffic), RTT: make(map[string][]time.Duration), Punches: make(map[control.Mapping]Punches)}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for path, t := range e.closedTraffic {
		st.Traffic[path] = t
	}
	for l := range e.live {
		t := st.Traffic[l.path]
		t.add(l.traffic())
		st.Traffic[l.path] = t
	}
	for _, ps := range e.peers {
		if l := ps.link; l != nil {
			st.RTT[l.path] = append(st.RTT[l.path], l.conn.ConnectionStats().SmoothedRTT)
		}
	}
	for m, p := range e.punches {
		st.Punches[m] = p
	}
	return st
}

// countPunch records a direct dial to k's peer starting (outcome nil) or ending.
func (e *Endpoint) countPunch(ps *peerState, failed *bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := ps.info.Mapping
	p := e.punches[m]
	switch {
	case failed == nil:
		p.Attempts++
	case *failed:
		p.Failed++
	default:
		p.Succeeded++
	}
	e.punches[m] = p
}
