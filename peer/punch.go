package peer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/identity"
)

// Hole punching. Every peer has a loop on both sides. While there is no direct link it sends signed
// pings to all of the peer's candidate addresses at once (the interface addresses and the reflexive
// address the coord reported, plus any address the peer's own pings came from), fast at first, then
// backing off. Outgoing pings open the local NAT's mapping towards the peer; the peer does the same,
// so the first ping that crosses both NATs is answered by a pong. The side with the lower key dials
// QUIC to the first address that answered. If nothing answers within RelayDelay it also dials through
// the relay, and keeps punching more slowly: a direct link, once up, replaces the relayed one.
//
// A direct link is rechecked when the peer's endpoints change (it roamed: the coord saw a new address)
// or when the link stalls (packets go out, nothing comes back for stallAfter): both sides probe again,
// which opens their NATs towards the new addresses, and if the first address to answer is not the
// link's, the dialing side moves the link there. When the side that dialed roams, quic-go migrates the
// connection by itself (after path validation) as soon as its packets get through again.

const (
	// probeRate bounds the inbound probes per second whose signature is checked.
	probeRate = 200
	// maxLearned bounds the addresses learned from a peer's pings.
	maxLearned = 4
	// maxPending bounds the pings awaiting pongs per peer; older ones are forgotten.
	maxPending = 64
	// pingTimeout is how long a ping may wait for its pong.
	pingTimeout = 5 * time.Second
	// stallMin and stallMax bound how long a direct link may send without receiving before it is
	// rechecked (stallAfter).
	stallMin = time.Second
	stallMax = 2 * time.Second
	// maxAckDelay is how long a QUIC peer may wait before it acknowledges (quic-go's, and RFC
	// 9000's default): part of the probe timeout.
	maxAckDelay = 25 * time.Millisecond
)

// stallAfter is how long a direct link whose QUIC probe timeout is pto may send without receiving
// before it is rechecked: three probe timeouts, what RFC 9002 calls persistent congestion, within
// stallMin and stallMax. A healthy link answers every packet that asks for an answer within one,
// so on a LAN or a fast internet path a link that went dark (the peer's NAT rebound, a firewall
// closed) is rechecked after 1 s, and a slow path (hundreds of ms, a satellite) gets up to 2 s
// before its round trips could read as a stall. A recheck that finds the path alive costs a round
// of pings and, on the side whose links stalled, an endpoints report to the coord.
func stallAfter(pto time.Duration) time.Duration {
	return min(stallMax, max(stallMin, 3*pto))
}

type pendingPing struct {
	to    netip.AddrPort
	sent  time.Time
	spray bool // sent to many ports of to's address (birthday.go): a pong from any of them counts
}

type dialResult struct {
	conn *quic.Conn
	path string
	addr netip.AddrPort
	err  error
}

// peerLoop finds and keeps a path to k until ctx ends (k is no longer a peer, or Close). The
// decisions are pathState's (path.go); the loop reads the peer's state for each turn and carries out
// what the turn asks for.
func (e *Endpoint) peerLoop(ctx context.Context, k Key, ps *peerState) {
	defer e.wg.Done()
	s := newPathState(bytes.Compare(e.self[:], k[:]) < 0, e.cfg.RelayDelay, e.cfg.LinkIdle, time.Now())
	results := make(chan dialResult, 1)
	timer := time.NewTimer(idleWake)
	defer timer.Stop()
	var ev pathEvent
	for {
		v := pathView{noDirect: e.noDirect.Load(), relaying: e.relaying(), hold: e.hold.Load()}
		now := time.Now()
		e.mu.Lock()
		e.viewLocked(ps, &v, s.dialer)
		a, wakeAt := s.next(ev, &v, now)
		ps.validated, ps.sprayHit, ps.recheck = v.validated, v.sprayHit, v.recheck
		ps.dormant.Store(s.dormant)
		e.mu.Unlock()
		e.act(ctx, k, ps, &v, a, s.stalled, results)
		timer.Reset(time.Until(wakeAt))
		select {
		case <-ctx.Done():
			if s.dialing {
				if r := <-results; r.conn != nil {
					r.conn.CloseWithError(0, "no longer a peer")
				}
			}
			return
		case <-ps.wake:
			ev = pathEvent{kind: evWake}
		case r := <-results:
			ev = pathEvent{kind: evDialed, path: r.path, addr: r.addr, failed: r.err != nil}
			if r.path == PathDirect {
				e.countPunch(ps, &ev.failed)
			}
			if r.err != nil {
				e.log.Debug("dial failed", "peer", e.Who(k), "path", r.path, "addr", r.addr, "error", r.err)
			} else if !e.install(k, r.conn, r.path, true) {
				r.conn.CloseWithError(0, "not a peer")
			}
		case <-timer.C:
			ev = pathEvent{kind: evTimer}
		}
	}
}

// viewLocked fills in what a path decision reads of ps; lower says our key is the lower one. e.mu is
// held.
func (e *Endpoint) viewLocked(ps *peerState, v *pathView, lower bool) {
	v.link = ps.link
	v.online = len(ps.info.Endpoints) > 0
	if v.online {
		v.public = ps.info.Endpoints[0]
	}
	v.role = birthdayRole(e.mapping, ps.info.Mapping, e.ports, ps.info.Ports, lower)
	v.udpBlocked = e.anyTunnel()
	v.validated, v.sprayHit, v.recheck = ps.validated, ps.sprayHit, ps.recheck
	v.wanted, v.peerSlept = ps.wanted.Swap(false), ps.peerSlept
	ps.peerSlept = false
	if l := v.link; l != nil {
		v.used, v.streams = l.used.Load(), l.streams.Load()
		v.direct = l.path == PathDirect
		st := l.conn.ConnectionStats()
		v.sent, v.recv = st.PacketsSent, st.PacketsReceived
		v.pto = st.SmoothedRTT + 4*st.MeanDeviation + maxAckDelay
		v.sendsTo = e.sendsTo(l)
		v.canAlias = l.client
	}
}

// act carries out a turn's actions for k.
func (e *Endpoint) act(ctx context.Context, k Key, ps *peerState, v *pathView, a pathActions, stalled bool, results chan<- dialResult) {
	if a.sleep {
		e.log.Info("link idle, winding it down", "peer", e.Who(k), "path", v.link.path, "idle_for", e.cfg.LinkIdle)
		v.link.conn.CloseWithError(codeIdle, "idle")
		return
	}
	if a.recheck {
		e.log.Debug("rechecking the direct path", "peer", e.Who(k), "stalled", stalled)
		if stalled && e.cfg.OnStall != nil {
			e.cfg.OnStall()
		}
	}
	if a.ping {
		e.sendPings(k, ps)
	}
	if a.birthday {
		e.startBirthday(ctx, k, ps, v.role, v.public)
	}
	if a.follow.IsValid() {
		e.log.Info("peer moved, following it", "peer", e.Who(k), "from", v.sendsTo, "to", a.follow)
		e.alias.setAlias(addrPortOf(v.link.conn.RemoteAddr()), a.follow)
	}
	if a.dial == "" {
		return
	}
	if a.fallback {
		e.log.Info("direct path stalled, falling back to the relay", "peer", e.Who(k), "endpoint", v.link.conn.RemoteAddr())
	}
	if a.dial == PathDirect {
		e.countPunch(ps, nil)
	}
	go func() { results <- e.dial(ctx, k, a.dial, a.dialAddr) }()
}

// dial opens a QUIC link to k: directly to addr, or through the relay.
func (e *Endpoint) dial(ctx context.Context, k Key, path string, addr netip.AddrPort) dialResult {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	tlsConf, err := e.clientTLS(k)
	if err != nil {
		return dialResult{path: path, addr: addr, err: err}
	}
	var conn *quic.Conn
	if path == PathRelay {
		conn, err = e.relayTr.Dial(ctx, relayAddr{k}, tlsConf, e.quicConf)
	} else {
		conn, err = e.tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsConf, e.quicConf)
	}
	return dialResult{conn: conn, path: path, addr: addr, err: err}
}

// clientTLS is the TLS configuration for dialing k: it accepts k's key only.
func (e *Endpoint) clientTLS(k Key) (*tls.Config, error) {
	return identity.TLSConfig(e.cfg.Key, ALPN, false, func(pub ed25519.PublicKey) error {
		if !bytes.Equal(pub, k[:]) {
			return fmt.Errorf("peer answered with key %s, want %s", identity.ShortID(pub), k)
		}
		return nil
	})
}

// sendPings sends one signed ping to each of k's candidate addresses.
func (e *Endpoint) sendPings(k Key, ps *peerState) {
	now := time.Now()
	e.mu.Lock()
	cands := slices.Clone(ps.info.Endpoints)
	for _, a := range ps.learned {
		if !slices.Contains(cands, a) {
			cands = append(cands, a)
		}
	}
	for tx, p := range ps.pending {
		if now.Sub(p.sent) > pingTimeout {
			delete(ps.pending, tx)
		}
	}
	txs := make([]txID, len(cands))
	for i, a := range cands {
		rand.Read(txs[i][:])
		if len(ps.pending) < maxPending {
			ps.pending[txs[i]] = pendingPing{to: a, sent: now}
		}
	}
	e.mu.Unlock()
	var buf [pongSize]byte
	for i, a := range cands {
		e.writeSide(appendProbe(buf[:0], e.cfg.Key, kindPing, e.self, k, txs[i], netip.AddrPort{}), a)
	}
}

// handleProbe answers pings and records pongs. from is the packet's source address.
func (e *Endpoint) handleProbe(b []byte, from netip.AddrPort) {
	if e.noDirect.Load() {
		return
	}
	p, err := parseProbe(b)
	if err != nil {
		return
	}
	if p.from == e.self { // our own ping came back to us through our NAT: hairpinning works
		e.bindMu.Lock()
		ch := e.hairpins[p.tx]
		e.bindMu.Unlock()
		if ch != nil && p.verify(e.self) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		return
	}
	e.mu.RLock()
	_, known := e.peers[p.from]
	e.mu.RUnlock()
	if !known || !e.probes.Allow() || !p.verify(e.self) {
		return
	}
	switch p.kind {
	case kindPing:
		var buf [pongSize]byte
		e.writeSide(appendProbe(buf[:0], e.cfg.Key, kindPong, e.self, p.from, p.tx, from), from)
		e.mu.Lock()
		ps := e.peers[p.from]
		fresh := ps != nil && !slices.Contains(ps.info.Endpoints, from) && !slices.Contains(ps.learned, from)
		direct := ps != nil && ps.link != nil && ps.link.path == PathDirect
		if fresh {
			if len(ps.learned) == maxLearned {
				ps.learned = ps.learned[1:]
			}
			ps.learned = append(ps.learned, from)
		}
		e.mu.Unlock()
		if fresh && !direct { // the peer's NAT mapping towards us: ping it back at once
			e.sendPings(p.from, ps)
		}
	case kindPong:
		e.mu.Lock()
		ps := e.peers[p.from]
		if ps != nil {
			if pp, ok := ps.pending[p.tx]; ok && (pp.to == from || pp.spray && pp.to.Addr() == from.Addr()) {
				delete(ps.pending, p.tx)
				if pp.spray {
					ps.validated, ps.sprayHit = from, from
					e.log.Debug("hard NAT: spray answered", "peer", e.Who(p.from), "addr", from, "after", time.Since(pp.sent))
				} else if !ps.validated.IsValid() {
					ps.validated = from
					e.log.Debug("path validated", "peer", e.Who(p.from), "addr", from, "rtt", time.Since(pp.sent), "seen_as", p.observed)
				}
				poke(ps.wake)
			}
		}
		e.mu.Unlock()
	}
}
