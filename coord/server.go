// Package coord is the coordination server: it authenticates nodes by their identity keys, keeps
// accounts, networks and memberships in its store, allocates overlay IPs, tells every node which peers
// it may talk to (a full peer map at login, then deltas) and answers network requests.
//
// It also answers NAT-discovery binding requests and relays end-to-end encrypted QUIC packets between
// peers that have no direct path (relay.go): it forwards ciphertext and never sees overlay traffic.
// It knows nothing about netstacks or SOCKS. It speaks only the control protocol.
package coord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/coord/listener"
	"github.com/warren-net/warren/coord/relay"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// Config configures a Server.
type Config struct {
	// Key is the server's identity; nodes pin its fingerprint. Required.
	Key *identity.Key
	// Store holds the state. Required; the caller closes it after the Server.
	Store *store.Store
	// Pools are the overlay address pools the store allocates from (reported to nodes). Required.
	Pools store.Pools
	// Conn is the UDP socket to serve on. Required; the Server closes it.
	Conn net.PacketConn
	// TCP, if set, serves clients whose UDP is blocked (a *tcptun.Server on --listen-tcp) like Conn
	// serves the others. The Server closes it.
	TCP net.PacketConn
	// Logger; nil = silent.
	Logger hclog.Logger
	// LoginTimeout bounds how long a new connection may take to log in. Default 10s.
	LoginTimeout time.Duration
	// IdleTimeout is how long a silent node stays online. Default 45s (a node with one coord sends keep-alives every 22s,
	// control.Timers; one with several sets 6s itself, and QUIC uses the smaller).
	IdleTimeout time.Duration
	// ProbeConn is an optional second UDP socket on the same address, answering binding requests so
	// nodes can tell endpoint-dependent NAT mappings from endpoint-independent ones. The Server closes it.
	ProbeConn net.PacketConn
	// NoRelay turns the relay off: nodes without a direct path cannot talk.
	NoRelay bool
	// RelayRate bounds the packets per second one node may send through the relay. Default
	// relay.DefaultRate (about 27 MB/s of full-size packets).
	RelayRate int
	// Relays are standalone relays (warren-coord relay) announced to nodes in Welcome, in order of
	// preference; at most control.MaxRelays. Nodes log in to all of them and prefer them, in this
	// order, to this server's relay.
	Relays []control.Relay
	// RelayTap, if set, sees every relayed payload (tests use it to show the relay carries only
	// ciphertext). It must not retain or modify b.
	RelayTap func(b []byte)
	// EphemeralTimeout is how long an ephemeral node may be offline before it is removed (see
	// ephemeral.go). Default DefaultEphemeralTimeout.
	EphemeralTimeout time.Duration
	// BlockList is a file of address ranges refused at login, one CIDR prefix or IP address a line
	// ('#' comments); "" = none. It is re-read when it changes (see abuse.go); a bad line fails New.
	BlockList string
	// LoginRateIP and LoginBurstIP limit logins per source address (IPv6 per /64; loopback is exempt).
	// Default DefaultLoginRateIP and DefaultLoginBurstIP; rate.Inf = no limit.
	LoginRateIP  rate.Limit
	LoginBurstIP int
	// LoginRateKey and LoginBurstKey limit logins per identity key. Default DefaultLoginRateKey and
	// DefaultLoginBurstKey; rate.Inf = no limit.
	LoginRateKey  rate.Limit
	LoginBurstKey int

	// RequestRate and RequestBurst limit the control requests of one node (network operations,
	// owner actions, listings): a burst, then a steady rate; beyond it a request is answered with
	// control.CodeRateLimited. Default DefaultRequestRate and DefaultRequestBurst; rate.Inf = no limit.
	RequestRate  rate.Limit
	RequestBurst int

	// MaxNetworksPerNode bounds the networks one node may be a member of (create, join, approval).
	// Default DefaultMaxNetworksPerNode; at most control.MaxNetworks.
	MaxNetworksPerNode int
	// MaxNodesPerNetwork bounds the members of one network. Default DefaultMaxNodesPerNetwork; at
	// most control.MaxPeers.
	MaxNodesPerNetwork int
	// MaxPendingLogins bounds the connections between the first QUIC packet and a completed login
	// (handshakes in flight plus logins not yet sent); more are refused at once. Each lives at most
	// the handshake timeout (5s) plus LoginTimeout. Default DefaultMaxPendingLogins.
	MaxPendingLogins int

	// JoinRequestExpiry is how long a join request waits for the network owner's approval before it
	// is dropped. Default DefaultJoinRequestExpiry (7 days).
	JoinRequestExpiry time.Duration

	// CoordID names this server among several on one database (a PostgreSQL store shared by
	// several coords, see cluster.go); "" = the only one, nothing is published. Every coord needs its
	// own ID, stable across restarts.
	CoordID string
	// ClusterHeartbeat is how often a coord records that it is alive (default
	// DefaultClusterHeartbeat); ClusterTimeout is how long after its last heartbeat a coord counts
	// dead and its nodes offline (default DefaultClusterTimeout); EventRetention is how long events
	// are kept (default DefaultEventRetention).
	ClusterHeartbeat time.Duration
	ClusterTimeout   time.Duration
	EventRetention   time.Duration

	clock         func() time.Time // tests: the clock of join requests and of login and password buckets (nil = time.Now)
	limitLoopback bool             // tests: apply the per-address limit to loopback sources too
	frameBudget   int              // tests: the peer map and delta frame budget (0 = control.FrameBudget)
	newNodeBurst  int              // tests: new identities per address at once (0 = newNodeBurst)
}

// Defaults for the limits in Config.
const (
	DefaultMaxNetworksPerNode = 64
	DefaultMaxNodesPerNetwork = 1000
	DefaultMaxPendingLogins   = 1024
)

type nodeKey [identity.KeySize]byte

func (k nodeKey) String() string { return identity.ShortID(k[:]) }

// Server is a running coordination server.
type Server struct {
	cfg Config
	log hclog.Logger
	l   *listener.Listener // the socket, its transport and the goroutines serving it
	ctx context.Context    // alive until Close (l.Context())

	// changeMu serialises membership changes so each one computes its peer diffs on a stable store.
	changeMu sync.Mutex

	// mu guards the following.
	mu       sync.Mutex
	sessions map[nodeKey]*session
	closed   bool

	// watchMu guards watchers: for each node, the sessions that have it in their peers (a reverse
	// index of session.peers, kept by watch and unwatch), so that an event about a node looks at
	// its peers' sessions, not at every session (resyncOne). Taken after session.mu.
	watchMu  sync.Mutex
	watchers map[nodeKey]map[*session]struct{}

	// relay binds each session's key to the address its control connection comes from, for the relay
	// (relay.go); safe for concurrent use.
	relay *relay.Table

	addrWatch *addrWatch // which sessions followAddrs looks at (addrs.go)

	guard     *abuse.Guard                 // block list and login rate limits (abuse.go)
	newKeys   *abuse.Limiter[netip.Prefix] // new identities per address (abuse.go)
	passwords passwordGuard                // bounds on argon2id work (passwords.go)
	requests  *abuse.Limiter[nodeKey]      // control requests per node (ratelimit.go)

	pending *abuse.Pending // connections not yet logged in (handshake.go)
	metrics *coordMetrics  // logins, refusals, fan-out latency (metrics.go)

	cluster *cluster // the other coords on the database; nil = none (cluster.go)
}

// New validates cfg and starts serving on cfg.Conn.
func New(cfg Config) (*Server, error) {
	if cfg.Key == nil || cfg.Store == nil || cfg.Conn == nil {
		return nil, errors.New("coord: Key, Store and Conn are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 45 * time.Second
	}
	if len(cfg.Relays) > control.MaxRelays {
		return nil, fmt.Errorf("coord: %d relays announced, at most %d", len(cfg.Relays), control.MaxRelays)
	}
	if cfg.MaxNetworksPerNode <= 0 || cfg.MaxNetworksPerNode > control.MaxNetworks {
		cfg.MaxNetworksPerNode = min(control.MaxNetworks, max(cfg.MaxNetworksPerNode, DefaultMaxNetworksPerNode))
	}
	if cfg.MaxNodesPerNetwork <= 0 || cfg.MaxNodesPerNetwork > control.MaxPeers {
		cfg.MaxNodesPerNetwork = min(control.MaxPeers, max(cfg.MaxNodesPerNetwork, DefaultMaxNodesPerNetwork))
	}
	if cfg.MaxPendingLogins <= 0 {
		cfg.MaxPendingLogins = DefaultMaxPendingLogins
	}
	if cfg.ClusterHeartbeat <= 0 {
		cfg.ClusterHeartbeat = DefaultClusterHeartbeat
	}
	if cfg.ClusterTimeout <= 0 {
		cfg.ClusterTimeout = DefaultClusterTimeout
	}
	if cfg.EventRetention <= 0 {
		cfg.EventRetention = DefaultEventRetention
	}
	if cfg.JoinRequestExpiry <= 0 {
		cfg.JoinRequestExpiry = DefaultJoinRequestExpiry
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: make(map[nodeKey]*session), watchers: make(map[nodeKey]map[*session]struct{}), relay: relay.NewTable(cfg.RelayRate), addrWatch: newAddrWatch(),
		metrics: newCoordMetrics()}
	if err := s.initEphemeral(); err != nil {
		return nil, err
	}
	if err := s.initAbuse(); err != nil {
		return nil, err
	}
	s.newPending()
	l, err := listener.Listen(listener.Config{Key: cfg.Key, ALPN: control.ALPN, ResetLabel: "coord", Conn: cfg.Conn, TCP: cfg.TCP,
		Pending: s.pending, IdleTimeout: cfg.IdleTimeout, MaxStreams: 2})
	if err != nil {
		return nil, fmt.Errorf("coord: %w", err)
	}
	s.l, s.ctx = l, l.Context()
	l.Serve(s.serveConn)
	l.Go(s.sideLoop)
	if cfg.ProbeConn != nil {
		l.Go(s.probeLoop)
	}
	l.Every(blockCheckEvery, s.checkAbuse)
	l.Every(min(max(s.cfg.EphemeralTimeout/4, 50*time.Millisecond), 15*time.Second), s.reapDue)
	l.Every(addrCheckEvery, s.followAddrs)
	l.Every(joinExpiryCheck, s.expireJoinsNow)
	if err := s.initCluster(); err != nil {
		l.Close()
		return nil, fmt.Errorf("coord: join the other coordination servers: %w", err)
	}
	return s, nil
}

// Addr returns the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.cfg.Conn.LocalAddr() }

// Close disconnects every node, stops the server and waits for its goroutines. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.cfg.ProbeConn != nil {
		s.cfg.ProbeConn.Close() // ends probeLoop
	}
	err := s.l.Close()  // ends sessions: their loops watch s.ctx
	s.cluster.flushed() // their logouts, for the other coords
	return err
}

// Disconnect closes the control connection of the node with the given key, if it is logged in, and
// reports whether it was. The node's peers are told it went offline; the node may log in again.
func (s *Server) Disconnect(key []byte) bool {
	s.mu.Lock()
	sess := s.sessions[keyOf(key)]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	sess.conn.CloseWithError(closeOK, "disconnected by the server")
	return true
}

// RelayLoad describes the relays nodes of this server use.
type RelayLoad struct {
	Own        bool            // this server relays (not --no-relay)
	Bound      int             // nodes bound to this server's relay
	Standalone []control.Relay // the standalone relays announced, in order of preference
}

// Relays returns the relays this server offers nodes and the load on its own.
func (s *Server) Relays() RelayLoad {
	return RelayLoad{Own: !s.cfg.NoRelay, Bound: s.relay.Len(), Standalone: slices.Clone(s.cfg.Relays)}
}

// Fingerprint is the server's key fingerprint, as nodes pin it.
func (s *Server) Fingerprint() string { return s.cfg.Key.Fingerprint() }

// OnlineCount returns how many nodes are logged in.
func (s *Server) OnlineCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
