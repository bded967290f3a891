package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/coord/listener"
	"github.com/warren-net/warren/identity"
)

// ServerConfig configures a standalone relay.
type ServerConfig struct {
	// Key is the relay's identity; the coord announces its fingerprint and nodes pin it. Required.
	Key *identity.Key
	// Conn is the UDP socket to serve on. Required; the Server closes it.
	Conn net.PacketConn
	// TCP, if set, serves clients whose UDP is blocked (a *tcptun.Server on --listen-tcp) like Conn
	// serves the others. The Server closes it.
	TCP net.PacketConn
	// Logger; nil = silent.
	Logger hclog.Logger
	// Rate bounds the relayed packets per second per node. Default DefaultRate.
	Rate int
	// MaxNodes bounds the nodes logged in at once; more are refused. Default 10000.
	MaxNodes int
	// MaxPerIP bounds the nodes logged in at once from one IPv4 address or IPv6 /64 (many nodes may
	// share a NAT, but one host must not fill the relay with throwaway keys). Default 256.
	MaxPerIP int
	// LoginTimeout bounds how long a new connection may take to send its first consent list. Default 10s.
	LoginTimeout time.Duration
	// MaxPending bounds the connections handshaking or not logged in yet (a quarter of them per
	// address, with a QUIC Retry once half are taken; see abuse.Pending). Default 1024.
	MaxPending int
	// IdleTimeout is how long a silent node stays logged in. Default 12s (nodes send keep-alives every 2s).
	IdleTimeout time.Duration
	// Tap, if set, sees every relayed payload; see SideConfig.Tap.
	Tap func(b []byte)

	// BlockList is a file of address ranges the relay refuses, one CIDR prefix or IP address a line
	// ('#' comments); "" = none. Logins from them are refused, their relay frames and binding requests
	// dropped, and nodes logged in from a range the file newly lists are disconnected: the file is
	// re-read when it changes (every abuse.CheckEvery, or ReloadBlockList). A bad line fails NewServer.
	BlockList string
	// LoginRateIP and LoginBurstIP limit logins per source address (IPv6 per /64; loopback is exempt).
	// Default abuse.DefaultLoginRateIP and abuse.DefaultLoginBurstIP; rate.Inf = no limit.
	LoginRateIP  rate.Limit
	LoginBurstIP int
	// LoginRateKey and LoginBurstKey limit logins per identity key. Default abuse.DefaultLoginRateKey
	// and abuse.DefaultLoginBurstKey; rate.Inf = no limit.
	LoginRateKey  rate.Limit
	LoginBurstKey int

	limitLoopback bool             // tests: apply the per-address limit to loopback sources too
	clock         func() time.Time // tests: the clock login buckets fill by (nil = time.Now)
}

// Error codes for closing relay login connections (control's RelayClose codes).
const (
	closeOK          quic.ApplicationErrorCode = control.RelayCloseOK
	closeProtocol    quic.ApplicationErrorCode = control.RelayCloseProtocol
	closeFull        quic.ApplicationErrorCode = control.RelayCloseFull
	closeReplaced    quic.ApplicationErrorCode = control.RelayCloseReplaced
	closeBlocked     quic.ApplicationErrorCode = control.RelayCloseBlocked
	closeRateLimited quic.ApplicationErrorCode = control.RelayCloseRateLimited
)

// Reasons given to refused or disconnected nodes.
const (
	reasonBlocked    = "logins from this address are blocked by the relay operator"
	reasonRateIP     = "too many relay logins from this address; try again later"
	reasonRateKey    = "too many relay logins with this identity; try again later"
	reasonFull       = "relay full"
	reasonNowBlocked = "address blocked by the relay operator"
)

// addrCheckEvery is how often the Server looks for nodes whose connection migrated to a new address.
const addrCheckEvery = 500 * time.Millisecond

// Server is a standalone relay: nodes log in over QUIC (control.RelayALPN) with their identity keys
// from the socket they relay from, name the peers they consent to, and the Server forwards relay
// frames between logged-in nodes that name each other. It keeps no state beyond the logged-in nodes
// and its abuse controls (a block list, login rate limits: package abuse, as the coord's).
type Server struct {
	cfg     ServerConfig
	log     hclog.Logger
	l       *listener.Listener // the socket, its transport and the goroutines serving it
	table   *Table
	guard   *abuse.Guard
	pending *abuse.Pending  // connections not logged in yet
	ctx     context.Context // alive until Close (l.Context())

	// mu guards the following.
	mu       sync.Mutex
	sessions map[Key]*relaySession
	perIP    map[netip.Prefix]int // logged-in nodes per source IPv4 address or IPv6 /64
	closed   bool
}

// relaySession is one logged-in node. It is the Consent of its Table member.
type relaySession struct {
	conn    *quic.Conn
	prefix  netip.Prefix // the source range it is counted in (Server.perIP)
	member  *Member
	consent atomic.Pointer[KeySet]
}

func (s *relaySession) Allows(k Key) bool { return s.consent.Load().Allows(k) }

// NewServer validates cfg and starts serving on cfg.Conn.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Key == nil || cfg.Conn == nil {
		return nil, errors.New("relay: Key and Conn are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxNodes <= 0 {
		cfg.MaxNodes = 10000
	}
	if cfg.MaxPerIP <= 0 {
		cfg.MaxPerIP = 256
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 10 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 12 * time.Second
	}
	guard, err := abuse.NewGuard(abuse.GuardConfig{BlockList: cfg.BlockList, LoginRateIP: cfg.LoginRateIP, LoginBurstIP: cfg.LoginBurstIP,
		LoginRateKey: cfg.LoginRateKey, LoginBurstKey: cfg.LoginBurstKey, LimitLoopback: cfg.limitLoopback, Logger: cfg.Logger, Now: cfg.clock, TCP: abuse.SourcesOf(cfg.TCP)})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, table: NewTable(cfg.Rate), guard: guard, sessions: make(map[Key]*relaySession),
		perIP: make(map[netip.Prefix]int)}
	s.pending = abuse.NewPending(cfg.MaxPending, guard.Limited)
	l, err := listener.Listen(listener.Config{Key: cfg.Key, ALPN: control.RelayALPN, ResetLabel: "relay", Conn: cfg.Conn, TCP: cfg.TCP,
		Pending: s.pending, IdleTimeout: cfg.IdleTimeout, MaxStreams: 1})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s.l, s.ctx = l, l.Context()
	l.Serve(s.serveConn)
	for _, side := range l.Sides() {
		l.Go(func() {
			Serve(s.ctx, SideConfig{Transport: side, Table: s.table, Blocked: s.guard.Blocked, Tap: cfg.Tap})
		})
	}
	l.Every(addrCheckEvery, s.followAddrs)
	l.Every(abuse.CheckEvery, func() { s.guard.Maintain(s.disconnectBlocked) })
	return s, nil
}

// Addr returns the UDP address the relay listens on.
func (s *Server) Addr() net.Addr { return s.cfg.Conn.LocalAddr() }

// Nodes returns how many nodes are logged in.
func (s *Server) Nodes() int { return s.table.Len() }

// Close disconnects every node, stops the relay and waits for its goroutines. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.l.Close() // ends the sessions: they watch s.ctx
}

// serveConn logs a node in and applies its consent lists until the connection ends.
func (s *Server) serveConn(conn *quic.Conn) {
	pub, err := identity.PeerKey(rawCerts(conn))
	if err != nil {
		conn.CloseWithError(closeProtocol, "bad identity")
		return
	}
	key := Key(pub)
	log := s.log.With("node", identity.ShortID(pub), "remote", conn.RemoteAddr().String())
	if code, reason := s.checkLogin(key, addrPortOf(conn.RemoteAddr())); reason != "" {
		log.Info("relay login refused", "reason", reason)
		conn.CloseWithError(code, reason)
		return
	}
	stop := context.AfterFunc(s.ctx, func() { conn.CloseWithError(closeOK, "relay shutting down") })
	defer stop()

	ctx, cancel := context.WithTimeout(conn.Context(), s.cfg.LoginTimeout)
	stream, err := conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		conn.CloseWithError(closeProtocol, "no login stream")
		return
	}
	if !s.room(key, s.guard.SourceRange(addrPortOf(conn.RemoteAddr()).Addr())) { // before reading the list, too
		log.Info("relay login refused: too many nodes")
		conn.CloseWithError(closeFull, reasonFull)
		return
	}
	stream.SetReadDeadline(time.Now().Add(s.cfg.LoginTimeout))
	keys, err := control.ReadRelayConsent(stream)
	if err != nil {
		log.Debug("bad relay login", "error", err)
		conn.CloseWithError(closeProtocol, "bad consent list")
		return
	}
	stream.SetReadDeadline(time.Time{})
	addr := addrPortOf(conn.RemoteAddr())
	sess := &relaySession{conn: conn, prefix: s.guard.SourceRange(addr.Addr())}
	set := NewKeySet(keys)
	sess.consent.Store(&set)

	s.mu.Lock()
	old := s.sessions[key]
	if !s.roomLocked(key, sess.prefix) {
		s.mu.Unlock()
		log.Info("relay login refused: too many nodes", "from_range", sess.prefix)
		conn.CloseWithError(closeFull, reasonFull)
		return
	}
	if old != nil {
		s.dropLocked(key, old)
	}
	s.sessions[key] = sess
	s.perIP[sess.prefix]++
	sess.member = s.table.Bind(key, addr, sess)
	s.mu.Unlock()
	if old != nil {
		old.conn.CloseWithError(closeReplaced, "logged in elsewhere")
	}
	s.pending.Done(conn) // before the OK: a node that has read it holds no slot
	if _, err := stream.Write([]byte{control.RelayLoginOK}); err != nil {
		s.logout(key, sess)
		return
	}
	log.Info("node logged in to the relay", "peers", len(set))
	for {
		keys, err := control.ReadRelayConsent(stream)
		if err != nil {
			if conn.Context().Err() == nil && s.ctx.Err() == nil {
				log.Warn("closing relay connection: bad consent list", "error", err)
				conn.CloseWithError(closeProtocol, "bad consent list")
			}
			break
		}
		set := NewKeySet(keys)
		sess.consent.Store(&set)
	}
	s.logout(key, sess)
	log.Info("node left the relay")
}

// room reports whether key, from the source range prefix, may log in within MaxNodes and MaxPerIP.
func (s *Server) room(key Key, prefix netip.Prefix) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roomLocked(key, prefix)
}

func (s *Server) roomLocked(key Key, prefix netip.Prefix) bool {
	old := s.sessions[key]
	inRange := s.perIP[prefix]
	if old != nil && old.prefix == prefix {
		inRange-- // a node logging in again replaces itself
	}
	return !s.closed && (old != nil || len(s.sessions) < s.cfg.MaxNodes) && inRange < s.cfg.MaxPerIP
}

// PendingLogins returns how many connections are pending (handshaking or not logged in yet), and
// how many were refused since start because all slots were taken.
func (s *Server) PendingLogins() (pending int, refused uint64) { return s.pending.Counts() }

func (s *Server) logout(key Key, sess *relaySession) {
	sess.conn.CloseWithError(closeOK, "")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[key] == sess {
		s.dropLocked(key, sess)
	}
}

// dropLocked forgets the current session of key: its entry, its count and its binding.
func (s *Server) dropLocked(key Key, sess *relaySession) {
	delete(s.sessions, key)
	if s.perIP[sess.prefix]--; s.perIP[sess.prefix] <= 0 {
		delete(s.perIP, sess.prefix)
	}
	s.table.Unbind(sess.member)
}

// followAddrs keeps each node's binding on the address its connection comes from now: when a node's
// NAT maps it to a new address, quic-go migrates the connection after path validation, and the relay
// must follow, or it would drop the node's frames and send its peers' frames to the old address.
// NewServer runs it every addrCheckEvery.
func (s *Server) followAddrs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		if a := addrPortOf(sess.conn.RemoteAddr()); a.IsValid() && a != s.table.Addr(sess.member) {
			s.log.Info("node address changed", "node", identity.ShortID(sess.member.key[:]), "to", a)
			s.table.Move(sess.member, a)
		}
	}
}

func rawCerts(conn *quic.Conn) [][]byte {
	certs := conn.ConnectionState().TLS.PeerCertificates
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		return unmap(ua.AddrPort())
	}
	return netip.AddrPort{}
}

// Collector exports the relay's metrics (warren_relay_*: frames and bytes forwarded, drops by
// reason, nodes bound), read at scrape time.
func (s *Server) Collector() prometheus.Collector { return s.table.Collector() }
