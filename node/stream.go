package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

// dial opens a proxied connection. Overlay TCP to a peer rides its own QUIC stream (the stream path:
// no netstack on either side, QUIC's congestion control end to end); other overlay traffic, and TCP
// when Config.PacketPathTCP is set, goes through the netstack as IP packets. Destinations outside the
// overlay are dialed from the host, unless OverlayOnly; the host's own addresses only with AllowLocal.
func (n *Node) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	stack := n.stack.Load()
	if stack == nil {
		return nil, errClosed
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ip := ap.Addr().Unmap()
	if !n.inOverlay(ip) {
		if n.cfg.OverlayOnly {
			return nil, fmt.Errorf("%w: %v is outside the overlay (--overlay-only)", socks.ErrNotAllowed, ip)
		}
		if !n.cfg.AllowLocal && isHostAddr(ip) {
			return nil, fmt.Errorf("%w: %v is this host (use --allow-local to permit)", socks.ErrNotAllowed, ip)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	ip = ip.WithZone("") // a zone means nothing inside the overlay
	addr = netip.AddrPortFrom(ip, ap.Port()).String()
	tcp := network == "tcp" || network == "tcp4" || network == "tcp6"
	if k, ok := n.routes.Load().owner[ip]; ok && tcp && !n.cfg.PacketPathTCP {
		return n.ep.DialStream(ctx, k, peer.StreamHeader{Proto: peer.ProtoTCP, Port: ap.Port()})
	}
	return stack.DialContext(ctx, network, addr)
}

// isHostAddr reports whether ip reaches this host: loopback, unspecified, or one of its interfaces.
func isHostAddr(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // when in doubt, refuse
	}
	return hostAddrIn(ip, addrs)
}

// acceptStream serves a peer's stream to an exposed TCP port by dialing it on this host (exposedAddr);
// anything else is refused, as the netstack would answer an unexposed port with a RST.
func (n *Node) acceptStream(s *peer.IncomingStream) {
	from, h := s.From, s.Header
	if h.Proto != peer.ProtoTCP || !n.exposed[Port{"tcp", h.Port}] {
		if n.log.IsDebug() {
			n.log.Debug("refused stream to unexposed port", "peer", n.who(from), "port", h.Port)
		}
		s.Refuse()
		return
	}
	if !n.routes.Load().allows(from, acl.TCP, h.Port) {
		n.aclRefused(from, protoTCP, h.Port)
		s.Refuse()
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	dst := n.exposedAddr(h.Port)
	local, err := n.dialLocal(ctx, "tcp", net.JoinHostPort(dst.String(), strconv.Itoa(int(h.Port))), from, n.streamFlow(from, h.Port))
	cancel()
	if err != nil {
		n.log.Debug("exposed port not answering", "addr", dst, "port", h.Port, "error", err)
		s.Refuse()
		return
	}
	c, err := s.Accept()
	if err != nil {
		local.Close()
		return
	}
	// The relay runs on goroutines of its own (n.streamRelays) and this one, whose stack grew deep in
	// the dial, ends: an idle connection then holds the stream's parked reader and, after a quiet
	// second, nothing for the service's socket (bicopy parks it). Close closes every relay and then
	// waits for them (a stream's error closes both sides by itself; a half-closed stream does not).
	raw := local // the socket itself: whoisConn's Read is its socket's
	if w, ok := local.(*whoisConn); ok {
		raw = w.Conn
	}
	end := func() {
		c.Close()
		local.Close()
	}
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed { // no relay once Close has begun, though streamRelays closes only later in it
		end()
		return
	}
	n.streamRelays.Start(c, nil, raw, end)
}

// exposedAddr is where acceptStream dials exposed TCP port: 127.0.0.1, or in TUN mode the device's
// address when a service holds the port there (bound to it, or to all addresses; listens.go), since
// a TUN-mode service may listen on its overlay address only. Either way the service sees a
// connection from this host; whois and PROXY headers say which peer it serves.
func (n *Node) exposedAddr(port uint16) netip.Addr {
	if b := n.tun.Load(); b != nil && b.dev != nil {
		for _, a := range []netip.Addr{b.self4, b.self6} {
			if inUse, err := n.listens.check(packet.ProtoTCP, a, port); err == nil && inUse {
				return a
			}
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}
