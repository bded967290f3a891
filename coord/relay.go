package coord

import (
	"net"
	"net/netip"

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
	s.mu.Unlock()
	if src == nil || dstSess == nil || !src.relayRate.Allow() {
		return netip.AddrPort{}, nodeKey{}, false
	}
	dstSess.mu.Lock()
	ok := dstSess.peers[src.key]
	dstSess.mu.Unlock()
	return dstSess.observed, src.key, ok
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
