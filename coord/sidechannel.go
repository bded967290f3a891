package coord

import (
	"net"

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
