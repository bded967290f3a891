package coord

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/quic-go/quic-go"
)

// Bounded pending-handshake state. A connection is pending from its first packet until its node has
// logged in: QUIC handshakes in flight and connections that have not sent their Login yet. At most
// Config.MaxPendingLogins are pending at once; more are refused at the first packet (quic-go sends
// CONNECTION_REFUSED), so a flood of half-open connections cannot grow memory. Each pending one is
// bounded in time too: the handshake by the QUIC handshake idle timeout, the login by
// Config.LoginTimeout. Once half the slots are taken, new connections must first prove their source
// address (a QUIC Retry round trip), so spoofed sources cannot hold slots at all. One address may
// hold at most a quarter of the slots, so that it cannot lock everyone else out.

// errTooManyPending refuses a connection while every pending slot is taken.
var errTooManyPending = errors.New("too many logins in progress")

type pendingSlotKey struct{}

// pendingSlot is one connection's claim on a pending slot, released once: at login or when the
// connection ends, whichever comes first.
type pendingSlot struct {
	once sync.Once
	s    *Server
	from netip.Addr
}

func (p *pendingSlot) release() {
	p.once.Do(func() {
		p.s.pendingLogins.Add(-1)
		p.s.pendingMu.Lock()
		if p.s.pendingFrom[p.from]--; p.s.pendingFrom[p.from] <= 0 {
			delete(p.s.pendingFrom, p.from)
		}
		p.s.pendingMu.Unlock()
	})
}

// maxPendingFrom is how many pending slots one address may hold.
func (s *Server) maxPendingFrom() int { return max(1, s.cfg.MaxPendingLogins/4) }

// admitConn is the QUIC transport's ConnContext: it takes a pending slot for a new connection or
// refuses it.
func (s *Server) admitConn(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	from := addrPort(info.RemoteAddr).Addr().Unmap()
	if _, limited := s.limitedSource(from); !limited {
		from = netip.Addr{} // loopback: this host, not counted per address
	}
	s.pendingMu.Lock()
	if from.IsValid() && s.pendingFrom[from] >= s.maxPendingFrom() {
		s.pendingMu.Unlock()
		s.refusedPending.Add(1)
		return nil, errTooManyPending
	}
	s.pendingFrom[from]++
	s.pendingMu.Unlock()
	slot := &pendingSlot{s: s, from: from}
	if s.pendingLogins.Add(1) > int64(s.cfg.MaxPendingLogins) {
		s.refusedPending.Add(1)
		slot.release()
		return nil, errTooManyPending
	}
	context.AfterFunc(ctx, slot.release) // the handshake failed or the connection closed
	return context.WithValue(ctx, pendingSlotKey{}, slot), nil
}

// loggedIn releases conn's pending slot.
func loggedIn(conn *quic.Conn) {
	if slot, ok := conn.Context().Value(pendingSlotKey{}).(*pendingSlot); ok {
		slot.release()
	}
}

// underPressure is the transport's VerifySourceAddress: with half the pending slots taken, new
// connections must validate their address first.
func (s *Server) underPressure(net.Addr) bool {
	return s.pendingLogins.Load() >= int64(s.cfg.MaxPendingLogins/2)
}

// PendingLogins returns how many connections are pending (handshaking or not logged in yet), and
// how many were refused since start because all slots were taken.
func (s *Server) PendingLogins() (pending int, refused uint64) {
	return int(s.pendingLogins.Load()), s.refusedPending.Load()
}
