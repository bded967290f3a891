package netstack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/warren-net/warren/internal/deadline"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpConn is an unconnected UDP endpoint of the stack as a net.PacketConn: the socket behind a
// proxy's UDP association (ListenUDP) and an exposed UDP port's listener. It is gonet.UDPConn
// without its allocations per datagram, which a game's traffic pays on every packet (stop 31's
// heap profile: gonet's waiter entry per blocking read, the reader, the source as a *net.UDPAddr,
// the destination as a FullAddress; together about a quarter of a node's bytes allocated per UDP
// round trip): the waiter entries are registered once, the reader and writer are fields reused under
// a lock, and ReadFromUDPAddrPort and WriteToUDPAddrPort pass addresses as values. ReadFrom and
// WriteTo keep the net.PacketConn contract for callers that need it.
type udpConn struct {
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	local net.Addr // the bound address, fixed at bind

	// readable and writable are signalled by entries registered on wq for the conn's life: a
	// notification between a read that would block and the wait is kept, never lost.
	readable, writable chan struct{}
	rEntry, wEntry     waiter.Entry

	closeOnce sync.Once
	closed    chan struct{}

	rd, wd deadline.Deadline // read and write deadlines

	readMu sync.Mutex // one reader at a time: w is reused
	w      tcpip.SliceWriter

	writeMu sync.Mutex // one writer at a time: r and to are reused
	r       bytes.Reader
	to      tcpip.FullAddress
}

// newUDPConn wraps a bound UDP endpoint whose waiter queue is wq.
func newUDPConn(wq *waiter.Queue, ep tcpip.Endpoint) *udpConn {
	c := &udpConn{ep: ep, wq: wq, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), closed: make(chan struct{})}
	if fa, err := ep.GetLocalAddress(); err == nil {
		c.local = net.UDPAddrFromAddrPort(addrPortOfFull(fa))
	}
	c.rEntry = waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { notify(c.readable) })
	c.wEntry = waiter.NewFunctionEntry(waiter.WritableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { notify(c.writable) })
	wq.EventRegister(&c.rEntry)
	wq.EventRegister(&c.wEntry)
	return c
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// addrPortOfFull converts a gVisor address without allocating (an IPv4-mapped address is unmapped).
func addrPortOfFull(fa tcpip.FullAddress) netip.AddrPort {
	var ip netip.Addr
	switch fa.Addr.Len() {
	case 4:
		ip = netip.AddrFrom4(fa.Addr.As4())
	case 16:
		ip = netip.AddrFrom16(fa.Addr.As16()).Unmap()
	}
	return netip.AddrPortFrom(ip, fa.Port)
}

// ReadFromUDPAddrPort reads one datagram into b and returns its source. A datagram longer than b is
// cut to len(b), as on a host socket.
func (c *udpConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		c.w = tcpip.SliceWriter(b)
		res, terr := c.ep.Read(&c.w, tcpip.ReadOptions{NeedRemoteAddr: true})
		c.w = nil
		switch terr.(type) {
		case nil:
			return res.Count, addrPortOfFull(res.RemoteAddr), nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive, *tcpip.ErrInvalidEndpointState:
			return 0, netip.AddrPort{}, c.opError("read", netip.AddrPort{}, net.ErrClosed)
		default:
			return 0, netip.AddrPort{}, c.opError("read", netip.AddrPort{}, tcpErr(terr))
		}
		select {
		case <-c.readable:
		case <-c.rd.Done():
			return 0, netip.AddrPort{}, c.opError("read", netip.AddrPort{}, os.ErrDeadlineExceeded)
		case <-c.closed:
			return 0, netip.AddrPort{}, c.opError("read", netip.AddrPort{}, net.ErrClosed)
		}
	}
}

// ReadFrom implements net.PacketConn.
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToUDPAddrPort sends b to to, an address of the endpoint's family (a broadcast or multicast
// address included).
func (c *udpConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	ip := to.Addr().Unmap()
	if !ip.IsValid() {
		return 0, c.opError("write", netip.AddrPort{}, errors.New("invalid destination address"))
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if ip.Is4() {
		c.to = tcpip.FullAddress{Addr: tcpip.AddrFrom4(ip.As4()), Port: to.Port()}
	} else {
		c.to = tcpip.FullAddress{Addr: tcpip.AddrFrom16(ip.As16()), Port: to.Port()}
	}
	c.r.Reset(b)
	defer c.r.Reset(nil)
	for {
		select {
		case <-c.wd.Done():
			return 0, c.opError("write", to, os.ErrDeadlineExceeded)
		default:
		}
		n, terr := c.ep.Write(&c.r, tcpip.WriteOptions{To: &c.to})
		switch terr.(type) {
		case nil:
			return int(n), nil
		case *tcpip.ErrWouldBlock: // the send buffer is full: wait for room, as a host socket does
		case *tcpip.ErrClosedForSend, *tcpip.ErrInvalidEndpointState:
			return 0, c.opError("write", to, net.ErrClosed)
		default:
			return 0, c.opError("write", to, tcpErr(terr))
		}
		select {
		case <-c.writable:
		case <-c.wd.Done():
			return 0, c.opError("write", to, os.ErrDeadlineExceeded)
		case <-c.closed:
			return 0, c.opError("write", to, net.ErrClosed)
		}
	}
}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opError("write", netip.AddrPort{}, errors.New("not a UDP address"))
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Close closes the endpoint and wakes a blocked reader and writer.
func (c *udpConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.wq.EventUnregister(&c.rEntry)
		c.wq.EventUnregister(&c.wEntry)
		c.ep.Close()
		c.rd.Stop()
		c.wd.Stop()
	})
	return nil
}

// LocalAddr returns the bound address.
func (c *udpConn) LocalAddr() net.Addr { return c.local }

// SetDeadline implements net.PacketConn.
func (c *udpConn) SetDeadline(t time.Time) error {
	c.rd.Set(t)
	c.wd.Set(t)
	return nil
}

// SetReadDeadline implements net.PacketConn.
func (c *udpConn) SetReadDeadline(t time.Time) error { c.rd.Set(t); return nil }

// SetWriteDeadline implements net.PacketConn.
func (c *udpConn) SetWriteDeadline(t time.Time) error { c.wd.Set(t); return nil }

func (c *udpConn) opError(op string, to netip.AddrPort, err error) error {
	e := &net.OpError{Op: op, Net: "udp", Source: c.local, Err: err}
	if to.IsValid() {
		e.Addr = net.UDPAddrFromAddrPort(to)
	}
	return e
}
