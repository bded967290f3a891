package abuse

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// Pending bounds a QUIC server's connections that have not logged in yet. A connection is pending
// from its first packet until the server calls Done: QUIC handshakes in flight and connections that
// have not sent their login. At most max are pending at once; more are refused at the first packet
// (quic-go sends CONNECTION_REFUSED), so a flood of half-open connections cannot grow memory. Once
// half the slots are taken, new connections must first prove their source address (a QUIC Retry
// round trip), so spoofed sources cannot hold slots at all; and one address may hold at most a
// quarter of them (an IPv6 /64 counts as one address, as in SourceRange), so that it cannot lock
// everyone else out. Each pending connection is bounded in
// time by the server: the handshake by QUIC's handshake idle timeout, the login by its own timeout.
// Safe for concurrent use.
type Pending struct {
	max     int
	perAddr int
	source  func(netip.Addr) (netip.Prefix, bool)

	n       atomic.Int64
	refused atomic.Uint64
	mu      sync.Mutex
	from    map[netip.Prefix]int // pending connections per source range (SourceRange)
}

// ErrTooManyPending refuses a connection while every pending slot (or its address's share) is taken.
var ErrTooManyPending = errors.New("too many logins in progress")

// NewPending returns a Pending of the given number of slots. source says which range an address's
// share is counted under, and false for addresses held to no share (Guard.Limited).
func NewPending(slots int, source func(netip.Addr) (netip.Prefix, bool)) *Pending {
	return &Pending{max: slots, perAddr: max(1, slots/4), source: source, from: make(map[netip.Prefix]int)}
}

type pendingKey struct{}

// slot is one connection's claim, released once: at Done or when the connection ends.
type slot struct {
	once sync.Once
	p    *Pending
	from netip.Prefix // invalid: not counted per address
}

func (s *slot) release() {
	s.once.Do(func() {
		s.p.n.Add(-1)
		if !s.from.IsValid() {
			return
		}
		s.p.mu.Lock()
		if s.p.from[s.from]--; s.p.from[s.from] <= 0 {
			delete(s.p.from, s.from)
		}
		s.p.mu.Unlock()
	})
}

// Admit is the QUIC transport's ConnContext: it takes a slot for a new connection or refuses it.
func (p *Pending) Admit(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	var from netip.Prefix // invalid: held to no share
	if ua, ok := info.RemoteAddr.(*net.UDPAddr); ok {
		from, _ = p.source(ua.AddrPort().Addr())
	}
	if from.IsValid() {
		p.mu.Lock()
		if p.from[from] >= p.perAddr {
			p.mu.Unlock()
			p.refused.Add(1)
			return nil, ErrTooManyPending
		}
		p.from[from]++
		p.mu.Unlock()
	}
	s := &slot{p: p, from: from}
	if p.n.Add(1) > int64(p.max) {
		p.refused.Add(1)
		s.release()
		return nil, ErrTooManyPending
	}
	context.AfterFunc(ctx, s.release) // the handshake failed or the connection closed
	return context.WithValue(ctx, pendingKey{}, s), nil
}

// Done releases conn's slot: its node has logged in.
func (p *Pending) Done(conn *quic.Conn) {
	if s, ok := conn.Context().Value(pendingKey{}).(*slot); ok {
		s.release()
	}
}

// UnderPressure is the transport's VerifySourceAddress: with half the slots taken, new connections
// must validate their address first.
func (p *Pending) UnderPressure(net.Addr) bool { return p.n.Load() >= int64(p.max/2) }

// Counts returns how many connections are pending, and how many were refused since the start.
func (p *Pending) Counts() (pending int, refused uint64) { return int(p.n.Load()), p.refused.Load() }
