// Package memnet is an in-memory packet network for tests: net.PacketConns that pass datagrams
// through bounded queues, with no sockets and no kernel in between. A test that builds its nodes on
// it does not depend on loopback timing, and can run under testing/synctest: a read waits on a
// channel, so a goroutine blocked in it is durably blocked, which a real socket's is not.
//
// Delivery is like UDP's on a quiet link: a packet to an address nobody listens on is dropped without
// a word, one to a full queue is dropped and counted, and nothing is reordered. A filter (SetFilter)
// drops chosen packets, to cut a path or to play a firewall. It does not play NATs.
package memnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/internal/deadline"
)

// QueueLen is how many packets wait for a Conn's reader before more are dropped.
const QueueLen = 256

// maxPacket is the largest datagram a Conn accepts (a UDP payload's limit).
const maxPacket = 65507

// Network is a set of Conns that can reach each other. Its methods are safe for concurrent use.
type Network struct {
	mu     sync.Mutex
	conns  map[netip.AddrPort]*Conn
	next   uint16                             // the next port Listen tries when asked for port 0
	filter func(from, to netip.AddrPort) bool // nil = deliver everything
}

// New returns an empty network.
func New() *Network {
	return &Network{conns: make(map[netip.AddrPort]*Conn), next: 40000}
}

// Listen opens a Conn at addr; port 0 picks a free port of addr's IP.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	if !addr.Addr().IsValid() {
		return nil, fmt.Errorf("memnet: listen on %v: no IP address", addr)
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr.Port() == 0 {
		for range 65535 {
			p := n.next
			n.next++
			if n.next == 0 {
				n.next = 1024
			}
			if _, used := n.conns[netip.AddrPortFrom(addr.Addr(), p)]; !used && p != 0 {
				addr = netip.AddrPortFrom(addr.Addr(), p)
				break
			}
		}
		if addr.Port() == 0 {
			return nil, fmt.Errorf("memnet: listen on %v: no free port", addr.Addr())
		}
	}
	if _, used := n.conns[addr]; used {
		return nil, fmt.Errorf("memnet: listen on %v: address in use", addr)
	}
	c := &Conn{net: n, addr: addr, local: net.UDPAddrFromAddrPort(addr), in: make(chan packet, QueueLen),
		closed: make(chan struct{})}
	n.conns[addr] = c
	return c, nil
}

// MustListen is Listen that panics on failure, for tests.
func (n *Network) MustListen(addr string) *Conn {
	c, err := n.Listen(netip.MustParseAddrPort(addr))
	if err != nil {
		panic(err)
	}
	return c
}

// SetFilter makes the network deliver only the packets for which pass returns true; nil delivers
// everything. pass is called for every packet, from the sender's goroutine.
func (n *Network) SetFilter(pass func(from, to netip.AddrPort) bool) {
	n.mu.Lock()
	n.filter = pass
	n.mu.Unlock()
}

// send hands a copy of b from from to whoever listens at to.
func (n *Network) send(from, to netip.AddrPort, b []byte) {
	n.mu.Lock()
	dst, pass := n.conns[to], n.filter
	n.mu.Unlock()
	if dst == nil || (pass != nil && !pass(from, to)) {
		return
	}
	p := packet{from: from, b: append([]byte(nil), b...)}
	select {
	case dst.in <- p:
	case <-dst.closed:
	default:
		dst.drops.Add(1)
	}
}

type packet struct {
	from netip.AddrPort
	b    []byte
}

// Conn is one endpoint of a Network: a net.PacketConn whose addresses are *net.UDPAddr.
type Conn struct {
	net   *Network
	addr  netip.AddrPort
	local *net.UDPAddr
	in    chan packet
	drops atomic.Uint64

	closeOnce sync.Once
	closed    chan struct{}

	deadline deadline.Deadline // the read deadline
}

var _ net.PacketConn = (*Conn)(nil)

// Drops counts the packets dropped because this Conn's queue was full.
func (c *Conn) Drops() uint64 { return c.drops.Load() }

// AddrPort returns the Conn's address.
func (c *Conn) AddrPort() netip.AddrPort { return c.addr }

// ReadFrom reads the next packet; its address is a *net.UDPAddr.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	dl := c.deadline.Done()
	select {
	case p := <-c.in:
		return copy(b, p.b), net.UDPAddrFromAddrPort(p.from), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-dl:
		return 0, nil, errDeadline
	}
}

// WriteTo sends b to addr, a *net.UDPAddr. It never blocks.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("memnet: write to %v: not a UDP address", addr)
	}
	if len(b) > maxPacket {
		return 0, fmt.Errorf("memnet: write to %v: %d bytes is too long", addr, len(b))
	}
	to := ua.AddrPort()
	c.net.send(c.addr, netip.AddrPortFrom(to.Addr().Unmap(), to.Port()), b)
	return len(b), nil
}

// Close frees the Conn's address and ends its reads. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
		c.deadline.Stop()
	})
	return nil
}

// LocalAddr returns the Conn's address as a *net.UDPAddr.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// SetDeadline sets the read deadline; writes never block.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes reads, current and future, fail with an error that wraps
// os.ErrDeadlineExceeded once t has passed; a zero t means no deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadline.Set(t)
	return nil
}

// SetWriteDeadline does nothing: writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer do nothing: the queue is QueueLen packets. Having them keeps
// quic-go from warning that the conn's buffers cannot be sized.
func (c *Conn) SetReadBuffer(int) error  { return nil }
func (c *Conn) SetWriteBuffer(int) error { return nil }

var errDeadline = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "memnet: i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }
func (*timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }
