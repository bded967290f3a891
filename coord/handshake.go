package coord

import "github.com/warren-net/warren/coord/abuse"

// Bounded pending-handshake state: at most Config.MaxPendingLogins connections may be handshaking
// or not yet logged in, a quarter of them from one address (loopback exempt), with a QUIC Retry
// once half are taken (abuse.Pending). Each is bounded in time too: the handshake by the QUIC
// handshake idle timeout, the login by Config.LoginTimeout.

// newPending sets up the server's bound on connections that have not logged in yet.
func (s *Server) newPending() {
	s.pending = abuse.NewPending(s.cfg.MaxPendingLogins, s.guard.Limited)
}

// PendingLogins returns how many connections are pending (handshaking or not logged in yet), and
// how many were refused since start because all slots were taken.
func (s *Server) PendingLogins() (pending int, refused uint64) { return s.pending.Counts() }
