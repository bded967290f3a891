package node

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/socks"
)

// listenUDP opens the socket behind one SOCKS UDP ASSOCIATE: overlay destinations (and broadcast and
// multicast, which fan out to peers) go through the netstack, others through a host socket unless
// OverlayOnly, and never to this host's own addresses without AllowLocal.
func (n *Node) listenUDP() (net.PacketConn, error) {
	stack := n.stack.Load()
	if stack == nil {
		return nil, errClosed
	}
	r := &udpRouter{overlay: n.overlay, allowLocal: n.cfg.AllowLocal, in: make(chan datagram, 64), done: make(chan struct{})}
	var err error
	if r.v4, err = stack.ListenUDP("udp4"); err != nil {
		return nil, err
	}
	if r.v6, err = stack.ListenUDP("udp6"); err != nil {
		r.v4.Close()
		return nil, err
	}
	conns := []net.PacketConn{r.v4, r.v6}
	if !n.cfg.OverlayOnly {
		host, err := net.ListenUDP("udp", nil)
		if err != nil {
			r.v4.Close()
			r.v6.Close()
			return nil, fmt.Errorf("host UDP socket: %w", err)
		}
		r.host = host
		conns = append(conns, host)
	}
	for _, c := range conns {
		r.wg.Add(1)
		go r.read(c)
	}
	return r, nil
}

// udpRouter is one UDP association of the proxy: a net.PacketConn over several sockets, choosing one
// by destination on write and merging their reads. Reads go through a small bounded queue; datagrams
// beyond it are dropped, as a full socket buffer would. Once the proxy asks (socks.DatagramPusher),
// each socket's reader hands its datagrams straight to the proxy instead, with no queue and no
// hand-off between goroutines.
type udpRouter struct {
	overlay      overlay        // destinations that go through the netstack (with fan-out addresses)
	allowLocal   bool           // Config.AllowLocal
	v4, v6, host net.PacketConn // host is nil with Config.OverlayOnly
	in           chan datagram
	done         chan struct{}
	once         sync.Once
	wg           sync.WaitGroup

	push atomic.Pointer[func(buf []byte, off int, from netip.AddrPort)] // set by PushTo

	mu       sync.Mutex
	deadline time.Time
}

// datagram is a received datagram: buf[socks.PushHeadroom:socks.PushHeadroom+n].
type datagram struct {
	buf  *[datagramBuf]byte
	n    int
	from netip.AddrPort
}

const (
	maxDatagram = 65535
	datagramBuf = socks.PushHeadroom + maxDatagram
)

var datagramPool = sync.Pool{New: func() any { return new([datagramBuf]byte) }}

// addrPortReader is a socket that returns a datagram's source as a value (*net.UDPConn and the
// netstack's UDP sockets): no allocation per datagram.
type addrPortReader interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
}

// addrPortWriter is its writing side.
type addrPortWriter interface {
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
}

func (r *udpRouter) read(c net.PacketConn) {
	defer r.wg.Done()
	readFrom := func(b []byte) (int, netip.AddrPort, error) {
		n, from, err := c.ReadFrom(b)
		ua, _ := from.(*net.UDPAddr)
		if err != nil || ua == nil {
			return n, netip.AddrPort{}, err
		}
		return n, ua.AddrPort(), nil
	}
	if ar, ok := c.(addrPortReader); ok {
		readFrom = ar.ReadFromUDPAddrPort
	}
	for {
		buf := datagramPool.Get().(*[datagramBuf]byte)
		n, from, err := readFrom(buf[socks.PushHeadroom:])
		if err != nil {
			datagramPool.Put(buf)
			return
		}
		if !from.IsValid() {
			datagramPool.Put(buf)
			continue
		}
		if push := r.push.Load(); push != nil {
			(*push)(buf[:socks.PushHeadroom+n], socks.PushHeadroom, from)
			datagramPool.Put(buf)
			continue
		}
		select {
		case r.in <- datagram{buf: buf, n: n, from: from}:
		default:
			datagramPool.Put(buf) // the reader is behind: drop
		}
	}
}

// ReadFrom returns the next datagram from any of the sockets.
func (r *udpRouter) ReadFrom(b []byte) (int, net.Addr, error) {
	r.mu.Lock()
	dl := r.deadline
	r.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case d := <-r.in:
		n := copy(b, d.buf[socks.PushHeadroom:socks.PushHeadroom+d.n])
		datagramPool.Put(d.buf)
		return n, net.UDPAddrFromAddrPort(d.from), nil
	case <-r.done:
		return 0, nil, net.ErrClosed
	case <-timeout:
		return 0, nil, errTimeout
	}
}

// PushTo hands every datagram from now on to h, on the sockets' reader goroutines, and the ones
// already queued (see socks.DatagramPusher).
func (r *udpRouter) PushTo(h func(buf []byte, off int, from netip.AddrPort)) {
	r.push.Store(&h)
	for {
		select {
		case d := <-r.in:
			h(d.buf[:socks.PushHeadroom+d.n], socks.PushHeadroom, d.from)
			datagramPool.Put(d.buf)
		default:
			return
		}
	}
}

// WriteTo sends b to addr through the socket its destination calls for.
func (r *udpRouter) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("not a UDP address: %v", addr)
	}
	return r.WriteToUDPAddrPort(b, ua.AddrPort())
}

// WriteToUDPAddrPort is WriteTo without a net.Addr from the caller.
func (r *udpRouter) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	ip := to.Addr().Unmap()
	to = netip.AddrPortFrom(ip, to.Port())
	var c net.PacketConn
	switch {
	case r.overlay.contains(ip) || r.overlay.fanOut(ip) || (ip.Is6() && ip.IsMulticast()):
		c = r.v6
		if ip.Is4() {
			c = r.v4
		}
	case r.host == nil:
		return 0, fmt.Errorf("%w: %v is outside the overlay (--overlay-only)", socks.ErrNotAllowed, ip)
	case !r.allowLocal && isHostAddr(ip):
		return 0, fmt.Errorf("%w: %v is this host", socks.ErrNotAllowed, ip)
	default:
		c = r.host
	}
	if w, ok := c.(addrPortWriter); ok {
		return w.WriteToUDPAddrPort(b, to) // the netstack's and host sockets: no net.Addr per datagram
	}
	return c.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

// Close closes every socket and waits for the readers.
func (r *udpRouter) Close() error {
	r.once.Do(func() {
		close(r.done)
		for _, c := range []net.PacketConn{r.v4, r.v6, r.host} {
			if c != nil {
				c.Close()
			}
		}
		r.wg.Wait()
		for {
			select {
			case d := <-r.in:
				datagramPool.Put(d.buf)
			default:
				return
			}
		}
	})
	return nil
}

func (r *udpRouter) LocalAddr() net.Addr { return r.v4.LocalAddr() }

func (r *udpRouter) SetDeadline(t time.Time) error { return r.SetReadDeadline(t) }

func (r *udpRouter) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	r.deadline = t
	r.mu.Unlock()
	return nil
}

func (r *udpRouter) SetWriteDeadline(time.Time) error { return nil }

var errTimeout = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

var _ net.PacketConn = (*udpRouter)(nil)
