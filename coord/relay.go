package coord

import (
	"net"
	"net/netip"
	"time"

	"github.com/warren-net/warren/control"
)

// The coord's side channel (formats in package control): binding requests on both of its ports, and
// relay frames on the main one. A relay frame is attributed to the node whose control connection comes
// from the frame's source address — the QUIC handshake proved that node's key from there — and is
// forwarded only to a node that shares a network with it, to the address of that node's control
// connection. The payload is the two peers' own end-to-end QUIC: the relay sees ciphertext.

// sideLoop serves the main socket's non-QUIC packets until Close.
func (s *Server) sideLoop() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	out := make([]byte, 0, 2048)
	for {
		n, addr, err := s.tr.ReadNonQUICPacket(s.ctx, buf)
		if err != nil {
			return
		}
		from := addrPort(addr)
		if s.blocked(from.Addr()) {
			continue
		}
		b := buf[:n]
		switch b[0] {
		case control.KindBindingReq:
			if tx, err := control.ParseBindingRequest(b); err == nil {
				s.tr.WriteTo(control.AppendBindingResponse(out[:0], tx, from), addr)
			}
		case control.KindRelayTo:
			if s.cfg.NoRelay {
				continue
			}
			_, dst, payload, err := control.ParseRelay(b)
			if err != nil {
				continue
			}
			if to, src, ok := s.relayTarget(from, keyOf(dst)); ok {
				if s.cfg.RelayTap != nil {
					s.cfg.RelayTap(payload)
				}
				s.tr.WriteTo(control.AppendRelay(out[:0], control.KindRelayFrom, src[:], payload), net.UDPAddrFromAddrPort(to))
			}
		}
	}
}

// relayTarget returns where to forward a frame from address from to node dst, and the sender's key:
// dst's control address, if from is a logged-in node within its relay rate that shares a network
// with dst.
func (s *Server) relayTarget(from netip.AddrPort, dst nodeKey) (netip.AddrPort, nodeKey, bool) {
	s.mu.Lock()
	src, dstSess := s.byAddr[from], s.sessions[dst]
	var to netip.AddrPort
	if dstSess != nil {
		to = dstSess.observed
	}
	s.mu.Unlock()
	if src == nil || dstSess == nil || !src.relayRate.Allow() {
		return netip.AddrPort{}, nodeKey{}, false
	}
	dstSess.mu.Lock()
	ok := dstSess.peers[src.key]
	dstSess.mu.Unlock()
	return to, src.key, ok
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
	if s.byAddr[from] == sess {
		delete(s.byAddr, from)
	}
	s.byAddr[to] = sess
	sess.observed = to
	s.mu.Unlock()
	sess.mu.Lock()
	sess.endpoints = candidateEndpoints(to, sess.local)
	sess.mu.Unlock()
	sess.log.Info("node address changed", "from", from, "to", to)
	if err := s.refreshPeers(sess.key, nil); err != nil {
		s.log.Error("address change: refresh peers", "error", err)
	}
}

// probeLoop answers binding requests on the second port until Close.
func (s *Server) probeLoop() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	out := make([]byte, 0, control.BindingSize)
	for {
		n, addr, err := s.cfg.ProbeConn.ReadFrom(buf)
		if err != nil {
			return
		}
		if s.blocked(addrPort(addr).Addr()) {
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
