package relay

import (
	"net/netip"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/identity"
)

// The standalone relay's abuse controls, the coord's (package abuse): a block list file, re-read when
// it changes, and login rate limits per source address and per identity key. A refused login is
// closed with a RelayClose code and a reason the node shows its user; a node logged in from a range
// the list newly names is disconnected; binding requests and relay frames from blocked addresses are
// dropped unread (Serve's Blocked).

// checkLogin returns the close code and reason for a login from addr with key that the guard refuses;
// reason "" = allowed.
func (s *Server) checkLogin(key Key, addr netip.AddrPort) (quic.ApplicationErrorCode, string) {
	switch s.guard.CheckLogin(key, addr.Addr()) {
	case abuse.Blocked:
		return closeBlocked, reasonBlocked
	case abuse.TooManyFromIP:
		return closeRateLimited, reasonRateIP
	case abuse.TooManyWithKey:
		return closeRateLimited, reasonRateKey
	}
	return closeOK, ""
}

// ReloadBlockList re-reads ServerConfig.BlockList if its file changed and disconnects nodes logged in
// from addresses it now blocks. On error the old list stays. The Server also does this by itself
// every abuse.CheckEvery.
func (s *Server) ReloadBlockList() error { return s.guard.Reload(s.disconnectBlocked) }

// Blocked reports whether address a is in the block list (the TCP fallback asks before a stream's
// handshake: its QUIC connections come from synthetic addresses the list cannot name).
func (s *Server) Blocked(a netip.Addr) bool { return s.guard.Blocked(a) }

// disconnectBlocked closes the login connections of nodes whose address is blocked; their sessions
// end and unbind them.
func (s *Server) disconnectBlocked() {
	var victims []*relaySession
	s.mu.Lock()
	for _, sess := range s.sessions {
		if s.guard.Blocked(s.table.Addr(sess.member).Addr()) {
			victims = append(victims, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range victims {
		s.log.Info("disconnecting node: its address is blocked", "node", identity.ShortID(sess.member.key[:]), "remote", s.table.Addr(sess.member))
		sess.conn.CloseWithError(closeBlocked, reasonNowBlocked)
	}
}
