// Package socks is the node's local proxy front end: a SOCKS5 server (RFC 1928 CONNECT, RFC 1929
// username/password) and an HTTP proxy (CONNECT and absolute-URI forwarding) on the same port, told
// apart by the client's first byte. It resolves names and dials through functions it is given. It never
// imports the netstack or gVisor, and it does not decide where it listens: the caller enforces
// loopback or authentication.
//
// The SOCKS wire protocol is parsed by github.com/things-go/go-socks5; this package adds what a VPN
// front end needs around it: name resolution from the peer map, reply codes that say why a dial
// failed, a handshake deadline, a bound on concurrent clients, and a Close that tears every client
// connection down and waits for it.
package socks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"

	"github.com/warren-net/warren/internal/bicopy"
)

// ErrUnknownName is returned (wrapped) by a resolver for names that are not peers.
var ErrUnknownName = errors.New("unknown name")

// ErrNotAllowed is returned (wrapped) by a dialer for destinations the proxy must not reach (outside
// the overlay with overlay-only set, or the host's own addresses). SOCKS clients get reply 0x02.
var ErrNotAllowed = errors.New("destination not allowed")

// Config configures a Server.
type Config struct {
	// Dial opens a connection to a literal "ip:port". Required. ctx ends after DialTimeout or when
	// the Server closes. The error picks the SOCKS reply by what it matches with errors.Is, never by
	// its text: syscall.ECONNREFUSED → 0x05 (connection refused), syscall.ENETUNREACH → 0x03
	// (network unreachable), ErrNotAllowed → 0x02 (not allowed by ruleset), anything else (host
	// unreachable, timeouts) → 0x04 (host unreachable).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolve maps a name (e.g. "b.warren") to an address. nil = only literal IPs are accepted.
	Resolve func(ctx context.Context, name string) (netip.Addr, error)
	// Logger; nil = silent. One debug line per failed connection at most.
	Logger hclog.Logger
	// DialTimeout bounds one dial. Default 10s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the time from accept to a complete request. Default 10s.
	HandshakeTimeout time.Duration
	// MaxConns bounds concurrent client connections; beyond it new ones are closed at once. Default 16384.
	MaxConns int
	// ListenUDP opens the socket a UDP ASSOCIATE sends through: WriteTo reaches a destination (overlay
	// or not, as the caller allows), ReadFrom returns replies with their source. nil = UDP ASSOCIATE
	// is refused with "command not supported". A socket that also implements DatagramPusher
	// delivers replies through it instead of ReadFrom, and one with WriteToUDPAddrPort (as
	// *net.UDPConn) is sent to through that, without an address allocated per datagram.
	ListenUDP func() (net.PacketConn, error)
	// UDPClientAllowed, if set, is asked once per association about the address its first datagram
	// (the one that claims it) comes from, after the address matched the client's IP and any port
	// the request named: false drops that datagram as foreign and leaves the association unclaimed.
	// The caller uses it to check which local user sent it: on loopback every user shares the IP.
	UDPClientAllowed func(from netip.AddrPort) bool
	// MaxAssociations bounds the UDP associations open at once; past it UDP ASSOCIATE is answered
	// with "general failure". Default 1024.
	MaxAssociations int
	// UDPIdle ends a UDP association that relays no datagram either way for this long, closing its
	// control connection (so the client learns it, and its slot is free). Default 2 minutes.
	UDPIdle time.Duration
	// FanOut reports whether a UDP destination is a broadcast or multicast address, and Peer whether
	// an address is a peer's. An association accepts datagrams only from the destinations its client
	// sent to, and, once it sent to a fan-out address, from peers. nil = neither.
	FanOut, Peer func(netip.Addr) bool
	// User and Password, if User is set, are required from every client: SOCKS5 username/password
	// (RFC 1929) or HTTP Proxy-Authorization Basic. Compared in constant time.
	User, Password string
}

// Accept failures back off from acceptBackoffMin, doubling, to acceptBackoffMax.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Server is a SOCKS5 server. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    hclog.Logger
	impl   *socks5.Server
	http   *httpProxy
	ctx    context.Context // alive until Close: dials and lookups end with it
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// relays are the relays of connections whose handshake is over (relay): Close closes them, which
	// is what ends a direction parked by bicopy, and waits for them.
	relays bicopy.Group

	// mu guards the following.
	mu  sync.Mutex
	lns map[net.Listener]struct{}
	// conns are the client connections; true: a relay owns it, and Close leaves it to relays.
	conns  map[net.Conn]bool
	closed bool

	associations atomic.Int64 // UDP associations open
	rejected     atomic.Uint64
	acceptErrors atomic.Uint64 // failed Accepts, retried
	udp          UDPStats
	requests     Requests
}

// Requests counts the proxy's requests by kind, whatever became of them.
type Requests struct {
	SOCKSConnect atomic.Uint64 // SOCKS5 CONNECT
	SOCKSUDP     atomic.Uint64 // SOCKS5 UDP ASSOCIATE
	HTTP         atomic.Uint64 // plain HTTP requests forwarded (absolute http:// URLs)
	HTTPConnect  atomic.Uint64 // HTTP CONNECT tunnels
}

// Requests returns the request counters.
func (s *Server) Requests() *Requests { return &s.requests }

// UDPStats returns the UDP ASSOCIATE drop counters.
func (s *Server) UDPStats() *UDPStats { return &s.udp }

// New returns a Server; it serves nothing until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Dial == nil {
		return nil, errors.New("socks: Dial is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxAssociations == 0 {
		cfg.MaxAssociations = defaultMaxAssociations
	}
	if cfg.UDPIdle == 0 {
		cfg.UDPIdle = defaultUDPIdle
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 16384
	}
	s := &Server{cfg: cfg, log: cfg.Logger, lns: make(map[net.Listener]struct{}), conns: make(map[net.Conn]bool)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	opts := []socks5.Option{
		socks5.WithResolver(resolver{s}),
		socks5.WithRule(socks5.NewPermitConnAndAss()),
		socks5.WithConnectHandle(s.handleConnect),
		socks5.WithAssociateHandle(s.handleAssociate),
		socks5.WithLogger(logAdapter{s.log}),
	}
	if cfg.User != "" {
		opts = append(opts, socks5.WithAuthMethods([]socks5.Authenticator{socks5.UserPassAuthenticator{Credentials: s}}))
	}
	s.impl = socks5.NewServer(opts...)
	s.http = newHTTPProxy(s)
	return s, nil
}

// Serve accepts clients on ln until ln fails or the Server is closed; after Close it returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("socks: accept: %w", err)
			}
			// Out of file descriptors (a peer can cause it by opening streams to an exposed port),
			// or another passing failure: wait and accept again, as net/http does, never stop.
			if backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax); backoff == acceptBackoffMin {
				s.log.Warn("accept failed; retrying", "error", err)
			}
			s.acceptErrors.Add(1)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		if !s.track(conn) {
			s.rejected.Add(1)
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if !s.serveConn(conn) {
				s.untrack(conn)
			}
		}()
	}
}

// serveConn runs one client's conversation, SOCKS5 or HTTP by its first byte; the handshake must
// finish within HandshakeTimeout. It reports whether it handed conn to a relay goroutine of its own
// (handleConnect), which then untracks it; otherwise the caller does.
func (s *Server) serveConn(conn net.Conn) (relayed bool) {
	conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	cr := &capReader{r: conn, n: unlimited}
	br := bufio.NewReaderSize(cr, 4096)
	first, err := br.Peek(1)
	if err != nil {
		return false
	}
	pc := &peekedConn{Conn: conn, r: br}
	if first[0] == socks5Version {
		err = s.impl.ServeConn(pc)
	} else {
		err = s.http.serve(pc, cr)
	}
	if err != nil && s.log.IsDebug() {
		s.log.Debug("client connection ended", "client", conn.RemoteAddr().String(), "error", err)
	}
	return pc.relayed.Load()
}

const socks5Version = 5

// peekedConn is a client connection whose first bytes were already read into r; nil r (after
// detach) reads the connection directly.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
	// relayed: a relay goroutine owns the connection now, so Close (go-socks5 closes the connection
	// when its handler returns) leaves it open.
	relayed atomic.Bool
}

// Close closes the connection unless a relay owns it.
func (c *peekedConn) Close() error {
	if c.relayed.Load() {
		return nil
	}
	return c.Conn.Close()
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if c.r == nil {
		return c.Conn.Read(b)
	}
	return c.r.Read(b)
}

// detach returns what a relay needs once the handshake is over: the bare connection, and a reader
// of what the client sends from now on — the bytes that outer (a reader stacked on c, or nil) and c's
// own buffer already hold, then the connection itself. The relay then reads the socket directly, with
// no 4 KiB copy loop in between, and the handshake's buffers can be freed while the connection lives.
// outer may not be read afterwards; c's buffer is dropped (c itself stays referenced by the
// handshake code's deferred Close for as long as the connection lives).
func (c *peekedConn) detach(outer io.Reader) (net.Conn, io.Reader) {
	var pre []byte
	if outer != nil {
		br, ok := outer.(*bufio.Reader)
		if !ok {
			return c, outer // unknown reader: keep reading through it
		}
		pre = appendBuffered(pre, br)
	}
	if c.r != nil {
		pre = appendBuffered(pre, c.r)
		c.r = nil
	}
	if len(pre) == 0 {
		return c.Conn, c.Conn
	}
	return c.Conn, io.MultiReader(bytes.NewReader(pre), c.Conn)
}

// appendBuffered appends what br holds to b.
func appendBuffered(b []byte, br *bufio.Reader) []byte {
	buffered, _ := br.Peek(br.Buffered())
	return append(b, buffered...)
}

// CloseWrite half-closes the underlying connection if it can.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Valid checks SOCKS5 credentials (go-socks5's CredentialStore).
func (s *Server) Valid(user, password, _ string) bool { return s.checkAuth(user, password) }

func (s *Server) checkAuth(user, password string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.User))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(s.cfg.Password))
	return u&p == 1
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= s.cfg.MaxConns {
		return false
	}
	s.conns[c] = false
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// ActiveConns returns the number of client connections being served.
func (s *Server) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Rejected returns how many clients were turned away because MaxConns was reached.
func (s *Server) Rejected() uint64 { return s.rejected.Load() }

// Close stops every Serve loop, ends dials under way, closes every client connection and waits for
// their goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for ln := range s.lns {
		ln.Close()
	}
	for c, relayed := range s.conns {
		if !relayed {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.relays.Close()
	s.wg.Wait()
	s.http.tr.CloseIdleConnections()
	return nil
}

// handleConnect dials the target and relays bytes both ways with correct half-close.
func (s *Server) handleConnect(rctx context.Context, w io.Writer, req *socks5.Request) error {
	s.requests.SOCKSConnect.Add(1)
	client, ok := w.(net.Conn)
	if !ok {
		return errors.New("socks: writer is not a connection")
	}
	if err, ok := rctx.Value(resolveErrKey{}).(error); ok {
		socks5.SendReply(w, statute.RepHostUnreachable, nil)
		return fmt.Errorf("resolve %q: %w", req.RawDestAddr.FQDN, err)
	}
	client.SetDeadline(time.Time{}) // the handshake is over
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	target, err := s.cfg.Dial(ctx, "tcp", req.DestAddr.String())
	cancel()
	if err != nil {
		socks5.SendReply(w, replyCode(err), nil)
		return fmt.Errorf("connect to %v: %w", req.RawDestAddr, err)
	}
	if err := socks5.SendReply(w, statute.RepSuccess, target.LocalAddr()); err != nil {
		target.Close()
		return fmt.Errorf("send reply: %w", err)
	}
	pc, ok := client.(*peekedConn)
	if !ok { // serveConn hands go-socks5 a *peekedConn: nothing else reaches here
		target.Close()
		return errors.New("socks: client connection not from serveConn")
	}
	conn, rest := pc.detach(req.Reader)
	req.Reader = nil // go-socks5's buffer: garbage from here on
	s.relay(pc, conn, rest, target)
	return nil
}

// relay copies between a client whose handshake is over and target (s.relays: goroutines of its
// own, none for a client socket that has gone quiet) and closes both when done. The handshake's
// goroutine, whose stack grew deep in the handshake and the dial, can then end. pc belongs to the
// relay from now on: its Close is a no-op, the relay untracks it, and Close closes the relay, which
// is what ends a direction parked by bicopy. After Close the relay does not start, and both are
// closed and pc untracked at once.
func (s *Server) relay(pc *peekedConn, conn net.Conn, rest io.Reader, target net.Conn) {
	pc.relayed.Store(true)
	s.mu.Lock()
	if _, tracked := s.conns[pc.Conn]; tracked && !s.closed {
		s.conns[pc.Conn] = true
	}
	s.mu.Unlock()
	s.relays.Start(conn, rest, target, func() {
		s.untrack(pc.Conn)
		target.Close()
	})
}

// replyCode maps a dial error to a SOCKS5 reply code by what it matches (see Config.Dial). The
// host's dialer, the netstack and peer streams all return errors that match these errnos.
func replyCode(err error) uint8 {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return statute.RepConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return statute.RepNetworkUnreachable
	case errors.Is(err, ErrNotAllowed):
		return statute.RepRuleFailure
	}
	return statute.RepHostUnreachable // also syscall.EHOSTUNREACH and timeouts
}

// resolver adapts Config.Resolve to go-socks5. go-socks5 resolves a request's name before it looks
// at the command, but only CONNECT needs the answer: UDP ASSOCIATE's address is a hint (RFC 1928),
// and PySocks sends the name "0" there. So a failure is not returned but carried in the request's
// context (resolveErrKey), and handleConnect answers it with host unreachable (0x04).
type resolver struct{ s *Server }

// resolveErrKey keys the context value holding a request's resolution error.
type resolveErrKey struct{}

func (r resolver) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	if r.s.cfg.Resolve == nil {
		return context.WithValue(ctx, resolveErrKey{}, fmt.Errorf("%w: %q (names are not supported)", ErrUnknownName, name)), nil, nil
	}
	ip, err := r.s.cfg.Resolve(ctx, name)
	if err != nil {
		return context.WithValue(ctx, resolveErrKey{}, err), nil, nil
	}
	return ctx, ip.AsSlice(), nil
}

// logAdapter sends go-socks5's own error lines to debug level: they are per-client noise.
type logAdapter struct{ l hclog.Logger }

func (a logAdapter) Errorf(format string, args ...any) {
	if a.l.IsDebug() {
		a.l.Debug(fmt.Sprintf(format, args...))
	}
}
