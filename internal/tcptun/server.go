package tcptun

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Prefix holds the synthetic addresses the Server gives its streams (the discard-only prefix,
// RFC 6666): never on the wire, so nothing answers a packet sent there by mistake, and a server tells
// a TCP client from a UDP one by its address alone (IsSynthetic).
var Prefix = netip.MustParsePrefix("100::/64")

// IsSynthetic reports whether a is one of the Server's stream addresses.
func IsSynthetic(a netip.Addr) bool { return Prefix.Contains(a.Unmap()) }

// Server limits (defaults for ServerConfig's zero fields).
const (
	DefaultMaxConns     = 10000 // streams open at once
	DefaultMaxPerSource = 16    // streams from one IPv4 address or IPv6 /64
	// DefaultIdleTimeout closes a stream that carries no frame for this long: twice the longest QUIC
	// idle timeout warren uses (45 s), whose keep-alives every 22 s keep a live stream busier.
	DefaultIdleTimeout = 90 * time.Second
	handshakeTimeout   = 10 * time.Second // TLS handshake of an accepted stream
	inQueue            = 1024             // packets read from all streams, not yet read by QUIC
	outQueue           = 256              // packets per stream waiting for its writer
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Listener accepts the TCP streams. Required; the Server closes it.
	Listener net.Listener
	// TLS is the server's TLS configuration (identity certificate, client certificate required).
	// Required; the Server sets ALPN.
	TLS *tls.Config
	// Allow, if set, is asked about each accepted stream's source address before its handshake (the
	// server's block list); false closes the stream.
	Allow func(netip.Addr) bool
	// MaxConns and MaxPerSource bound the streams; 0 = the defaults.
	MaxConns, MaxPerSource int
	// IdleTimeout closes a stream that sends no frame for this long, so a client that completes the
	// handshake and then stays silent cannot hold a slot; 0 = DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Local is what LocalAddr returns (the server's UDP address); nil = the listener's address.
	Local net.Addr
}

// Server is a net.PacketConn over the framed TLS streams it accepts: each stream is one synthetic
// address in Prefix (port 1); ReadFrom returns packets from every stream, WriteTo sends to the stream
// an address names (to a gone stream: dropped). A QUIC transport on it serves TCP clients exactly as
// one on the UDP socket serves UDP clients. Safe for concurrent use.
type Server struct {
	cfg    ServerConfig
	ctx    context.Context
	cancel context.CancelFunc
	in     chan packet
	wg     sync.WaitGroup
	next   atomic.Uint64
	drops  atomic.Uint64

	mu       sync.Mutex
	conns    map[netip.Addr]*serverConn
	perSrc   map[netip.Prefix]int
	closed   bool
	deadline time.Time
	dlChange chan struct{}
}

type packet struct {
	from *net.UDPAddr // the stream's synthetic address, made once per stream (never modified)
	buf  *[MaxFrame]byte
	n    int
}

type serverConn struct {
	c    net.Conn
	from netip.Addr   // the stream's source address
	src  netip.Prefix // its source range (MaxPerSource)
	out  chan *[]byte
	done chan struct{}
}

var frameBufs = sync.Pool{New: func() any { return new([MaxFrame]byte) }}
var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, MaxFrame+2); return &b }}

// NewServer starts accepting streams on cfg.Listener.
func NewServer(cfg ServerConfig) *Server {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxPerSource <= 0 {
		cfg.MaxPerSource = DefaultMaxPerSource
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Local == nil {
		cfg.Local = cfg.Listener.Addr()
	}
	tlsConf := cfg.TLS.Clone()
	tlsConf.NextProtos = []string{ALPN}
	cfg.TLS = tlsConf
	s := &Server{cfg: cfg, in: make(chan packet, inQueue), conns: make(map[netip.Addr]*serverConn),
		perSrc: make(map[netip.Prefix]int), dlChange: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Drops counts packets dropped for a full queue.
func (s *Server) Drops() uint64 { return s.drops.Load() }

// Conns returns how many streams are open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Source returns the address of the TCP client behind synthetic address a, and false once its
// stream is gone (or for an address that is not one of this server's). Servers count logins, pending
// handshakes and the block list by it (abuse.Guard), so that a client cannot escape a per-address
// limit by opening new streams.
func (s *Server) Source(a netip.Addr) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.conns[a.Unmap()]; c != nil {
		return c.from, true
	}
	return netip.Addr{}, false
}

func sourceRange(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.cfg.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		src := netip.Addr{}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			src = ta.AddrPort().Addr().Unmap()
		}
		if s.cfg.Allow != nil && !s.cfg.Allow(src) {
			c.Close()
			continue
		}
		sc, addr, ok := s.add(tls.Server(c, s.cfg.TLS), src)
		if !ok {
			c.Close()
			continue
		}
		s.wg.Add(2)
		go s.serve(sc, addr)
		go s.writeLoop(sc)
	}
}

// add registers a stream under a new synthetic address, within the limits.
func (s *Server) add(c net.Conn, from netip.Addr) (*serverConn, netip.Addr, bool) {
	src := sourceRange(from)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= s.cfg.MaxConns || s.perSrc[src] >= s.cfg.MaxPerSource {
		return nil, netip.Addr{}, false
	}
	a16 := Prefix.Addr().As16()
	binary.BigEndian.PutUint64(a16[8:], s.next.Add(1))
	addr := netip.AddrFrom16(a16)
	sc := &serverConn{c: c, from: from, src: src, out: make(chan *[]byte, outQueue), done: make(chan struct{})}
	s.conns[addr] = sc
	s.perSrc[src]++
	return sc, addr, true
}

func (s *Server) remove(addr netip.Addr, sc *serverConn) {
	s.mu.Lock()
	if s.conns[addr] == sc {
		delete(s.conns, addr)
		if s.perSrc[sc.src]--; s.perSrc[sc.src] <= 0 {
			delete(s.perSrc, sc.src)
		}
	}
	s.mu.Unlock()
	close(sc.done)
	sc.c.Close()
}

// serve does the handshake and reads the stream's frames until it ends.
func (s *Server) serve(sc *serverConn, addr netip.Addr) {
	defer s.wg.Done()
	defer s.remove(addr, sc)
	tc := sc.c.(*tls.Conn)
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil || tc.ConnectionState().NegotiatedProtocol != ALPN {
		return
	}
	stop := context.AfterFunc(s.ctx, func() { tc.Close() })
	defer stop()
	r := bufio.NewReaderSize(tc, 16<<10)
	from := net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 1))
	// The read deadline moves on with the frames, at most four times per IdleTimeout (not per
	// frame: a stream may carry tens of thousands a second).
	idle := s.cfg.IdleTimeout
	var moved time.Time
	for {
		if now := time.Now(); now.Sub(moved) > idle/4 {
			tc.SetReadDeadline(now.Add(idle))
			moved = now
		}
		buf := frameBufs.Get().(*[MaxFrame]byte)
		n, err := ReadFrame(r, buf[:])
		if err != nil {
			frameBufs.Put(buf)
			return
		}
		select {
		case s.in <- packet{from: from, buf: buf, n: n}:
		default:
			frameBufs.Put(buf)
			s.drops.Add(1)
		}
	}
}

// writeLoop writes the stream's queued packets; a stream that cannot keep up loses packets (its
// queue is full), never stalls the others.
func (s *Server) writeLoop(sc *serverConn) {
	defer s.wg.Done()
	for {
		select {
		case <-sc.done:
			return
		case b := <-sc.out:
			_, err := sc.c.Write(*b)
			outBufs.Put(b)
			if err != nil {
				sc.c.Close()
				return
			}
		}
	}
}

// ReadFrom returns the next packet from any stream, from its synthetic address.
func (s *Server) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		s.mu.Lock()
		dl, change := s.deadline, s.dlChange
		s.mu.Unlock()
		var timer <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, timeoutErr{}
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timer = t.C
		}
		select {
		case pk := <-s.in:
			n := copy(p, pk.buf[:pk.n])
			frameBufs.Put(pk.buf)
			return n, pk.from, nil
		case <-s.ctx.Done():
			return 0, nil, net.ErrClosed
		case <-timer:
			return 0, nil, timeoutErr{}
		case <-change:
		}
	}
}

// WriteTo queues p for the stream addr names; a packet for no stream, or for a full queue, is
// dropped without error, as UDP would.
func (s *Server) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("tcptun: not a UDP address")
	}
	ap := ua.AddrPort()
	s.mu.Lock()
	sc, closed := s.conns[ap.Addr().Unmap()], s.closed
	s.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if sc == nil {
		return len(p), nil
	}
	b := outBufs.Get().(*[]byte)
	f, err := AppendFrame((*b)[:0], p)
	if err != nil {
		outBufs.Put(b)
		return 0, err
	}
	*b = f
	select {
	case sc.out <- b:
	default:
		outBufs.Put(b)
		s.drops.Add(1)
	}
	return len(p), nil
}

// Close stops accepting, closes every stream and waits for the Server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]net.Conn, 0, len(s.conns))
	for _, sc := range s.conns {
		conns = append(conns, sc.c)
	}
	s.mu.Unlock()
	s.cancel()
	err := s.cfg.Listener.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return err
}

// CloseFrom closes every stream whose source address drop names (addresses just added to a block
// list); it returns how many.
func (s *Server) CloseFrom(drop func(netip.Addr) bool) int {
	s.mu.Lock()
	var victims []net.Conn
	for _, sc := range s.conns {
		if drop(sc.from) {
			victims = append(victims, sc.c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

// ListenAddr returns the TCP listener's address.
func (s *Server) ListenAddr() net.Addr { return s.cfg.Listener.Addr() }

// LocalAddr returns ServerConfig.Local.
func (s *Server) LocalAddr() net.Addr { return s.cfg.Local }

// SetDeadline sets the read deadline (writes never block).
func (s *Server) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline sets the deadline for ReadFrom.
func (s *Server) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	close(s.dlChange)
	s.dlChange = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// SetWriteDeadline does nothing: writes never block.
func (s *Server) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer does nothing: the queues are the Server's own (quic-go asks, to size a UDP socket's).
func (s *Server) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing (see SetReadBuffer).
func (s *Server) SetWriteBuffer(int) error { return nil }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "tcptun: i/o timeout" }
func (timeoutErr) Unwrap() error   { return os.ErrDeadlineExceeded }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
