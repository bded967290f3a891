package peer

import (
	"maps"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
)

// aliasConn is the node's socket with a per-destination redirect on the send side. A QUIC client
// cannot follow a server that moved (RFC 9000 has no server migration), but the link's QUIC
// connection does not need to know: when a peer that we dialed roams to a new address, its old address
// becomes an alias of the new one and the same connection carries on — streams, proxied TCP
// connections and all. Reads are untouched.
//
// Any net.PacketConn whose addresses are *net.UDPAddr will do (tests use an in-memory one,
// internal/memnet); over a *net.UDPConn the transport gets a udpAliasConn, which keeps the methods of
// quic-go's fast paths.
type aliasConn struct {
	net.PacketConn
	aliases atomic.Pointer[map[netip.AddrPort]*net.UDPAddr] // nil when empty: one atomic load per packet
	mu      sync.Mutex                                      // serialises updates
}

// udpAliasConn is an aliasConn over a *net.UDPConn: quic-go keeps its batched receive path
// (ReadBatch, with UDP_GRO where the kernel has it) and its GSO send path (WriteMsgUDP, overridden
// here).
type udpAliasConn struct {
	*net.UDPConn
	alias *aliasConn // over the same UDPConn
	batch batchReader
	// unyielded counts the datagrams handed to quic-go since ReadBatch last yielded (yieldEvery).
	unyielded int
}

// yieldEvery is how many datagrams ReadBatch hands over before it lets the goroutines they woke
// run. quic-go's transport reads on a goroutine of its own and queues each datagram for its
// connection, which drops what does not fit in its queue of 256 (protocol.MaxConnUnprocessedPackets).
// Where the connection's goroutine runs in parallel it keeps up; on a node with one P
// (GOMAXPROCS 1, a node on two cores) it runs only once the reader blocks, and with UDP GRO one
// read can return 8 coalesced buffers of up to 64 datagrams each: a bulk transfer then overflowed
// the queue, each drop cost a retransmission, and the congestion window stayed near 300 KB
// (BENCHMARKS.md, stop 35). Yielding every quarter of the queue lets the connection drain it; a
// backlog waits in the socket's receive buffer instead, as on more cores.
const yieldEvery = 64

// receiveBufferCap bounds the receive buffer of the node's socket (Linux accounts twice this). quic-go
// asks for 7 MiB and, as root, forces it past net.core.rmem_max. Where the node itself is the
// bottleneck (a fast LAN, loopback, a small CPU) the backlog waits there, and a 64-byte round trip
// beside one bulk stream took 6–20 ms at p50 with that buffer, against 1.2–1.6 ms before the reads
// yielded (when the drops in quic-go's queue kept the backlog short); with this cap 1.6–2.3 ms (p99
// 8–10 ms against 4–5), and the bulk stream keeps most of the yield's gain. Half this cap gives the
// round trips back and costs the gain and a few percent more (BENCHMARKS.md, stop 35: the trade-off
// measured). A user without root on Linux's default rmem_max (208 KiB) had about this buffer
// already. The backlog a path's bandwidth times its delay needs is in flight on the path, not in
// this buffer: it holds only what arrives while the node is busy, 512 KiB being about a
// millisecond of the most a node moves here.
const receiveBufferCap = 256 << 10

// quic-go's fast paths need these methods: losing one (say, by wrapping the socket once more) would
// fall back to a read per packet without anyone noticing.
var _ quic.OOBCapablePacketConn = (*udpAliasConn)(nil)

// newAliasConn wraps c; transport is what the QUIC transport should use, c's redirecting self.
func newAliasConn(c net.PacketConn) (a *aliasConn, transport net.PacketConn) {
	a = &aliasConn{PacketConn: c}
	if uc, ok := c.(*net.UDPConn); ok {
		u := &udpAliasConn{UDPConn: uc, alias: a, batch: ipv4.NewPacketConn(uc)}
		if enableGRO(uc) {
			u.batch = newGROReader(u.batch)
		}
		return a, u
	}
	return a, a
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

// WriteTo is the plain send path.
func (c *aliasConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return c.PacketConn.WriteTo(b, c.redirect(ua))
	}
	return c.PacketConn.WriteTo(b, addr)
}

// SetReadBuffer sizes the socket's receive buffer if it has one (quic-go asks, and warns when it
// cannot).
func (c *aliasConn) SetReadBuffer(n int) error {
	if b, ok := c.PacketConn.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer sizes the socket's send buffer if it has one.
func (c *aliasConn) SetWriteBuffer(n int) error {
	if b, ok := c.PacketConn.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(n)
	}
	return nil
}

// ReadBatch is quic-go's receive path (it uses a conn's own ReadBatch when it has one). It yields
// the processor every yieldEvery datagrams, before a read: by then quic-go has queued all the
// datagrams of the reads before.
func (c *udpAliasConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if c.unyielded >= yieldEvery {
		c.unyielded = 0
		runtime.Gosched()
	}
	n, err := c.batch.ReadBatch(ms, flags)
	c.unyielded += n
	return n, err
}

// WriteTo is the plain send path.
func (c *udpAliasConn) WriteTo(b []byte, addr net.Addr) (int, error) { return c.alias.WriteTo(b, addr) }

// WriteMsgUDP is quic-go's send path. It goes through WriteMsgUDPAddrPort, which, unlike
// WriteMsgUDP, does not allocate per packet.
func (c *udpAliasConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	return c.UDPConn.WriteMsgUDPAddrPort(b, oob, c.alias.redirect(addr).AddrPort())
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
	if l.client && ap.IsValid() {
		return e.alias.target(ap)
	}
	return ap
}
