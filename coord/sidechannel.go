package coord

import (
	"net"
	"net/netip"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/relay"
)

// The coord's side channel (formats in package control): binding requests on both of its ports, and
// relay frames on the main one, served by package coord/relay. A relay frame is attributed to the node
// whose control connection comes from the frame's source address — the QUIC handshake proved that
// node's key from there — and is forwarded only to a node that shares a network with it (the
// session's Allows), to the address of that node's control connection. The payload is the two peers'
// own end-to-end QUIC: the relay sees ciphertext.

// sideLoop serves the main socket's non-QUIC packets until Close.
func (s *Server) sideLoop() {
	table := s.relay
	if s.cfg.NoRelay {
		table = nil
	}
	sides := s.l.Sides()
	for _, side := range sides[1:] {
		s.l.Go(func() {
			relay.Serve(s.ctx, relay.SideConfig{Transport: side, Table: table, Blocked: s.guard.Blocked, Tap: s.cfg.RelayTap})
		})
	}
	relay.Serve(s.ctx, relay.SideConfig{Transport: sides[0], Table: table, Blocked: s.guard.Blocked, Tap: s.cfg.RelayTap})
}

// followAddrs keeps each session's address current: when a node's NAT maps it to a new public address,
// quic-go migrates its control connection (after path validation), and the coord must follow, or it
// would drop the node's relay frames and keep giving its peers a dead endpoint to punch.
// New runs it periodically.
func (s *Server) followAddrs() {
	type move struct {
		sess *session
		to   netip.AddrPort
	}
	var moves []move
	s.mu.Lock()
	for _, sess := range s.sessions {
		if a := addrPort(sess.conn.RemoteAddr()); a.IsValid() && a != sess.observed {
			moves = append(moves, move{sess, a})
		}
	}
	s.mu.Unlock()
	for _, m := range moves {
		s.rebind(m.sess, m.to)
	}
}

// addrCheckEvery is how often followAddrs looks at the sessions' addresses.
const addrCheckEvery = 500 * time.Millisecond

// rebind moves sess to its new address and tells its peers the new endpoints.
func (s *Server) rebind(sess *session, to netip.AddrPort) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.mu.Lock()
	if s.sessions[sess.key] != sess {
		s.mu.Unlock()
		return
	}
	from := sess.observed
	sess.observed = to
	s.relay.Move(sess.member, to)
	s.mu.Unlock()
	sess.mu.Lock()
	sess.endpoints = s.candidateEndpoints(to, sess.local)
	sess.mu.Unlock()
	sess.log.Info("node address changed", "from", from, "to", to)
	if err := s.refreshPeers(sess.key, nil); err != nil {
		s.log.Error("address change: refresh peers", "error", err)
	}
}

// probeLoop answers binding requests on the second port until Close.
func (s *Server) probeLoop() {
	buf := make([]byte, 2048)
	out := make([]byte, 0, control.BindingSize)
	for {
		n, addr, err := s.cfg.ProbeConn.ReadFrom(buf)
		if err != nil {
			return
		}
		if s.guard.Blocked(addrPort(addr).Addr()) {
			continue
		}
		if tx, err := control.ParseBindingRequest(buf[:n]); err == nil {
			s.cfg.ProbeConn.WriteTo(control.AppendBindingResponse(out[:0], tx, addrPort(addr)), addr)
		}
	}
}

// probePort is the second port's number, reported to nodes in Welcome; 0 = none.
func (s *Server) probePort() uint16 {
	if s.cfg.ProbeConn == nil {
		return 0
	}
	if ua, ok := s.cfg.ProbeConn.LocalAddr().(*net.UDPAddr); ok {
		return uint16(ua.Port)
	}
	return 0
}
