package peer

import (
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// aliasConn is the node's UDP socket with a per-destination redirect on the send side. A QUIC client
// cannot follow a server that moved (RFC 9000 has no server migration), but the link's QUIC
// connection does not need to know: when a peer that we dialed roams to a new address, its old address
// becomes an alias of the new one and the same connection carries on — streams, proxied TCP
// connections and all. Reads are untouched, so quic-go keeps its batched receive path (it reads
// through SyscallConn) and its GSO send path (WriteMsgUDP, overridden here).
type aliasConn struct {
	*net.UDPConn
	aliases atomic.Pointer[map[netip.AddrPort]*net.UDPAddr] // nil when empty: one atomic load per packet
	mu      sync.Mutex                                      // serialises updates
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// redirect returns where a packet for addr really goes.
func (c *aliasConn) redirect(addr *net.UDPAddr) *net.UDPAddr {
	m := c.aliases.Load()
	if m == nil || addr == nil {
		return addr
	}
	if to, ok := (*m)[unmapped(addr.AddrPort())]; ok {
		return to
	}
	return addr
}

// WriteMsgUDP is quic-go's send path. It goes through WriteMsgUDPAddrPort, which, unlike
// WriteMsgUDP, does not allocate per packet.
func (c *aliasConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	return c.UDPConn.WriteMsgUDPAddrPort(b, oob, c.redirect(addr).AddrPort())
}

// WriteTo is the plain send path.
func (c *aliasConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return c.UDPConn.WriteTo(b, c.redirect(ua))
	}
	return c.UDPConn.WriteTo(b, addr)
}

// setAlias sends packets for from to to instead; a zero to removes the alias.
func (c *aliasConn) setAlias(from, to netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[netip.AddrPort]*net.UDPAddr{}
	if old := c.aliases.Load(); old != nil {
		m = maps.Clone(*old)
	}
	from = unmapped(from)
	if to.IsValid() && unmapped(to) != from {
		m[from] = net.UDPAddrFromAddrPort(unmapped(to))
	} else {
		delete(m, from)
	}
	if len(m) == 0 {
		c.aliases.Store(nil)
		return
	}
	c.aliases.Store(&m)
}

// target returns where packets for addr go now.
func (c *aliasConn) target(addr netip.AddrPort) netip.AddrPort {
	if m := c.aliases.Load(); m != nil {
		if to, ok := (*m)[unmapped(addr)]; ok {
			return to.AddrPort()
		}
	}
	return unmapped(addr)
}

// sendsTo returns the address l's packets go to now: the peer's, or what it is aliased to.
func (e *Endpoint) sendsTo(l *link) netip.AddrPort {
	ap := addrPortOf(l.conn.RemoteAddr())
	if e.alias != nil && l.client && ap.IsValid() {
		return e.alias.target(ap)
	}
	return ap
}
