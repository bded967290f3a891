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
	"github.com/warren-net/warren/internal/backoff"
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
	// stallAfter is how long a direct link may send without receiving before it is rechecked.
	stallAfter = 2 * time.Second
)

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

// peerLoop finds and keeps a path to k until ctx ends (k is no longer a peer, or Close).
func (e *Endpoint) peerLoop(ctx context.Context, k Key, ps *peerState) {
	defer e.wg.Done()
	dialer := bytes.Compare(e.self[:], k[:]) < 0
	pingEvery := backoff.New(200*time.Millisecond, 5*time.Second)
	// Birthday attempts (birthday.go) need both sides at once: they start from the same event (the
	// peer appearing, or the direct path failing) and retry on the same steady schedule.
	hardEvery := backoff.NewSteady(15*time.Second, 5*time.Minute)
	var (
		nextPing  time.Time // zero: ping now
		searching = time.Now()
		nextHard  = searching.Add(e.cfg.RelayDelay)
		wasDirect bool
		dialing   bool
		results   = make(chan dialResult, 1)
		timer     = time.NewTimer(time.Hour)
		// stall detection on the direct link: packets went out at unanswered and nothing came back since
		watched               *link
		lastRecv, lastSent    uint64
		unanswered, recheckAt time.Time
		stalled               bool
	)
	defer timer.Stop()
	for {
		e.mu.RLock()
		l, online, valid := ps.link, len(ps.info.Endpoints) > 0, ps.validated
		sprayed := valid.IsValid() && valid == ps.sprayHit // we found it: we dial, whatever the key order
		role := birthdayRole(e.mapping, ps.info.Mapping)
		var public netip.AddrPort
		if online {
			public = ps.info.Endpoints[0]
		}
		e.mu.RUnlock()
		direct := l != nil && l.path == PathDirect
		now := time.Now()
		wakeAt := now.Add(time.Hour)
		if wasDirect && !direct { // the direct path is gone: hard-NAT attempts start over
			nextHard = now.Add(e.cfg.RelayDelay)
			hardEvery.Reset()
			e.mu.Lock()
			if ps.sprayHit == valid {
				ps.validated, valid = netip.AddrPort{}, netip.AddrPort{}
			}
			ps.sprayHit, sprayed = netip.AddrPort{}, false
			e.mu.Unlock()
		}
		wasDirect = direct
		if direct && !e.noDirect.Load() {
			st := l.conn.ConnectionStats()
			if watched != l || st.PacketsReceived != lastRecv {
				watched, lastRecv, unanswered = l, st.PacketsReceived, time.Time{}
			} else if st.PacketsSent != lastSent && unanswered.IsZero() {
				unanswered = now
			}
			lastSent = st.PacketsSent
			stalled = !unanswered.IsZero() && now.Sub(unanswered) > stallAfter
			e.mu.Lock()
			recheck := ps.recheck || (stalled && now.Sub(recheckAt) > pingTimeout)
			ps.recheck = false
			if recheck {
				ps.validated, valid = netip.AddrPort{}, netip.AddrPort{}
			}
			e.mu.Unlock()
			if recheck {
				e.log.Debug("rechecking the direct path", "peer", k, "stalled", stalled)
				recheckAt = now
				e.sendPings(k, ps)
			}
			wakeAt = now.Add(time.Second)
		}
		if online && !direct && !e.noDirect.Load() {
			if !now.Before(nextPing) {
				e.sendPings(k, ps)
				d := pingEvery.Next()
				if l != nil { // relayed: keep trying, but gently
					d *= 4
				}
				nextPing = now.Add(d)
			}
			wakeAt = nextPing
			if role != "" && !valid.IsValid() {
				if !now.Before(nextHard) {
					e.startBirthday(ctx, k, ps, role, public)
					nextHard = now.Add(hardEvery.Next())
				}
				if nextHard.Before(wakeAt) {
					wakeAt = nextHard
				}
			}
		}
		switch {
		case !dialer || !direct || dialing:
		case valid.IsValid() && valid != e.sendsTo(l) && e.alias != nil && l.client:
			// The peer answers elsewhere now (it roamed): send the link's packets there. Same QUIC
			// connection, so every stream on it carries on.
			e.log.Info("peer moved, following it", "peer", k, "from", e.sendsTo(l), "to", valid)
			e.alias.setAlias(addrPortOf(l.conn.RemoteAddr()), valid)
		case valid.IsValid() && valid != e.sendsTo(l):
			dialing = true // the peer answers elsewhere now: move the link there
			go func() { results <- e.dial(ctx, k, PathDirect, valid) }()
		case stalled && !valid.IsValid() && now.Sub(recheckAt) >= e.cfg.RelayDelay && e.relaying():
			// The direct path went dark and no probe gets through: fall back to the relay now rather
			// than after the idle timeout; probing goes on and moves the link back when it can.
			e.log.Info("direct path stalled, falling back to the relay", "peer", k, "endpoint", l.conn.RemoteAddr())
			dialing = true
			go func() { results <- e.dial(ctx, k, PathRelay, netip.AddrPort{}) }()
		}
		if (dialer || sprayed) && online && !direct && !dialing {
			relay := e.relaying()
			switch {
			case valid.IsValid() && !e.noDirect.Load():
				dialing = true
				go func() { results <- e.dial(ctx, k, PathDirect, valid) }()
			case l == nil && relay && now.Sub(searching) >= e.cfg.RelayDelay:
				dialing = true
				go func() { results <- e.dial(ctx, k, PathRelay, netip.AddrPort{}) }()
			case l == nil && relay:
				if t := searching.Add(e.cfg.RelayDelay); t.Before(wakeAt) {
					wakeAt = t
				}
			}
		}
		timer.Reset(time.Until(wakeAt))
		select {
		case <-ctx.Done():
			if dialing {
				if r := <-results; r.conn != nil {
					r.conn.CloseWithError(0, "no longer a peer")
				}
			}
			return
		case <-ps.wake:
			e.mu.RLock()
			up := ps.link != nil
			e.mu.RUnlock()
			if !up && l != nil { // the link just died: search afresh
				e.mu.Lock()
				ps.validated, ps.sprayHit = netip.AddrPort{}, netip.AddrPort{}
				e.mu.Unlock()
				searching = time.Now()
				nextHard = searching.Add(e.cfg.RelayDelay)
				hardEvery.Reset()
				pingEvery.Reset()
				nextPing = time.Time{}
			}
		case r := <-results:
			dialing = false
			if r.err != nil {
				e.log.Debug("dial failed", "peer", k, "path", r.path, "addr", r.addr, "error", r.err)
				if r.path == PathDirect {
					e.mu.Lock()
					if ps.validated == r.addr {
						ps.validated = netip.AddrPort{}
					}
					if ps.sprayHit == r.addr {
						ps.sprayHit = netip.AddrPort{}
					}
					e.mu.Unlock()
				}
				continue
			}
			if !e.install(k, r.conn, r.path, true) {
				r.conn.CloseWithError(0, "not a peer")
			}
		case <-timer.C:
		}
	}
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
					e.log.Debug("hard NAT: spray answered", "peer", p.from, "addr", from, "after", time.Since(pp.sent))
				} else if !ps.validated.IsValid() {
					ps.validated = from
					e.log.Debug("path validated", "peer", p.from, "addr", from, "rtt", time.Since(pp.sent), "seen_as", p.observed)
				}
				poke(ps.wake)
			}
		}
		e.mu.Unlock()
	}
}
