// Package peer owns a node's one UDP socket and the QUIC links to its peers over it: one QUIC
// connection per peer pair, authenticated by both nodes' identity keys, carrying the overlay's IP
// packets as QUIC DATAGRAM frames. It also dials the coordination server over the same socket, so the
// coord sees the address peers will see.
//
// It finds paths (signed probes to every candidate address at once: hole punching, see punch.go),
// decides who dials (the side with the lower key), falls back to a relay (standalone ones, the
// coordination server's own) when no direct path answers and moves to a direct path when one does
// (relayconn.go; which relay per peer: relaypath.go), replaces dead links,
// and reports per-peer path state. It knows nothing about IP, netstacks or SOCKS: packets are opaque.
package peer

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// ALPN is the TLS application protocol of peer links.
const ALPN = "warren-peer/1"

// InitialPacketSize is the UDP payload size of peer-link QUIC packets from the first packet on (Chrome
// uses the same). It assumes a path MTU of at least 1378 bytes for IPv4 and 1398 for IPv6, which any
// Ethernet-sized path (1500, or 1492 with PPPoE) provides.
const InitialPacketSize = 1350

// MaxPacketSize is the largest packet Send accepts and so the overlay MTU: 1280, the IPv6 minimum link
// MTU, which gVisor's IPv6 needs. A DATAGRAM frame in an InitialPacketSize packet carries up to
// 1350-37-3 = 1310 bytes (quic-go reserves 37 bytes of packet overhead, the frame header takes 3), so
// it fits from the first packet of a link on (TestMaxPacketSizeFits). quic-go keeps InitialPacketSize
// when a connection migrates to a new client address (NAT rebinding), so migrated links still fit.
const MaxPacketSize = 1280

// maxStreams bounds the concurrent streams (proxied TCP connections) a peer may open to us, over
// all its links together; maxStreamsAll bounds them over all peers together (each holds a local
// connection, and with it a file descriptor), so that no peer and no group of peers can take every
// descriptor the node has; a node behind one proxy may hold 10,000 idle connections to one peer
// (ssh sessions, a crawler's keep-alives), so a peer's bound is the proxy's (socks.Config.MaxConns);
// maxLinks bounds a peer's links (the current one and retired ones that
// streams still use: at the bound a new link closes the retired one with the fewest), so that a
// peer cannot multiply streams by opening new links.
const (
	maxStreams    = 16384
	maxStreamsAll = 32768
	maxLinks      = 8
)

// Key is a peer's identity public key as a comparable value.
type Key [identity.KeySize]byte

// KeyOf converts a public key slice to a Key; ok is false if it has the wrong length.
func KeyOf(b []byte) (k Key, ok bool) {
	if len(b) != len(k) {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

// String renders the key compactly for logs.
func (k Key) String() string { return identity.ShortID(k[:]) }

// Who names peer k in logs: "name(KEYPREFIX)" (identity.Label) with the name from the last
// SetPeers, the key prefix alone for a key not in the peer set.
func (e *Endpoint) Who(k Key) string {
	var name string
	if m := e.names.Load(); m != nil {
		name = (*m)[k]
	}
	return identity.Label(name, k[:])
}

// Info is the desired state of one peer: who it is and where it can be reached. An empty Endpoints
// means the peer is offline: no dial is attempted, but an inbound link from it is still accepted.
type Info struct {
	Key Key
	// Name is the peer's name, for logs only (Endpoint.Who).
	Name string
	// Endpoints are the peer's candidate addresses, the one the coordination server observed (its
	// public address) first.
	Endpoints []netip.AddrPort
	// Mapping is the peer's NAT mapping behaviour as it reported it; it picks the technique for hard
	// NATs (birthday.go).
	Mapping control.Mapping
	// Ports is the peer's NAT's port pattern as it reported it (with MappingDependent only): its
	// next ports are predicted (predict.go). nil = random or not known.
	Ports *control.Ports
}

// Paths a link can take.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathNone   = "none"
	// PathIdle: the link wound down after LinkIdle without traffic (idle.go); the first packet or
	// stream to the peer brings it back.
	PathIdle = "idle"
)

// Status is the state of the link to one peer.
type Status struct {
	Path     string         // PathDirect, PathRelay, PathRelayTCP, PathIdle or PathNone
	Endpoint netip.AddrPort // remote address of the current link (for relayed links the relay's that carries it now)
	RTT      time.Duration  // smoothed RTT of the current link
}

// Errors.
var (
	// ErrNoLink is returned by Send when there is no live link to the peer.
	ErrNoLink = errors.New("no link to peer")
	// ErrLinkWaking is returned by Send to a peer whose link wound down (PathIdle): the packet is not
	// sent, the link is coming back, and WaitLink says when it is up. It wraps ErrNoLink.
	ErrLinkWaking = fmt.Errorf("%w: waking the idle link", ErrNoLink)
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("peer endpoint closed")
)

// Config configures an Endpoint.
type Config struct {
	// Key is the node's identity. Required.
	Key *identity.Key
	// Conn is the node's UDP socket. Required; the Endpoint owns it and closes it.
	Conn net.PacketConn
	// Receive is called with every packet a peer sends, from that link's receive goroutine. pkt may be
	// retained. Required.
	Receive func(from Key, pkt []byte)
	// Flush, if set, ends a batch of Receive calls: a link's receive goroutine calls it when no more
	// of the link's packets are queued, or after maxBatch of them, before it waits for the next. A
	// receiver that holds packets to coalesce them (netstack.Stack.Gather) delivers them then.
	Flush func()
	// AcceptStream is called, in a goroutine of its own, for every stream a peer opens, after its
	// header has been read. It must answer with s.Accept or s.Refuse. nil = streams are refused.
	AcceptStream func(s *IncomingStream)
	// Logger; nil = silent.
	Logger hclog.Logger
	// DialTimeout bounds one dial attempt (all endpoints in parallel). Default 5s.
	DialTimeout time.Duration
	// IdleTimeout is how long a link may stay silent before it is declared dead. Default 15s;
	// keep-alives go out at a third of it.
	IdleTimeout time.Duration
	// RelayDelay is how long hole punching may try alone before the dialing side also opens a link
	// through the relay. Default 1s.
	RelayDelay time.Duration
	// LinkIdle is how long a link may carry nothing (no packet either way, no stream open) before it
	// winds down: it closes, and nothing is sent to the peer (no keep-alives, no probes) until either
	// side has traffic for the other (idle.go). Only while the node is logged in to a relay, the way
	// back. 0 = links never wind down.
	LinkIdle time.Duration
	// NoDirect disables direct paths (probes are neither sent nor answered): every link goes through
	// the relay. For tests and for networks where direct UDP must not be used.
	NoDirect bool
	// Tunnel, if set, opens a TCP fallback to the server at addr (framed TLS, package tcptun): a
	// packet socket whose packets all go to and come from addr. DialControl uses it for a server that
	// does not answer over UDP (tunnel.go). nil = UDP only.
	Tunnel func(ctx context.Context, addr netip.AddrPort) (net.PacketConn, error)
	// OnTunnel, if set, is called when a server moves between UDP and TCP (Tunneled changes).
	OnTunnel func()
	// OnPortsUsed, if set, is called after a birthday attempt of this node behind a NAT that allocates
	// sequentially (SetMapping): its sockets or probes moved the NAT's port counter, so the pattern
	// peers predict from is stale; the node may measure it again (PortPattern) and report it.
	OnPortsUsed func()
	// OnStall, if set, is called when a direct link stalls (packets go out, nothing comes back) and
	// the path is rechecked: the node's own NAT may have rebound, which the coord must learn. It must
	// not block.
	OnStall func()
	// Chatter, if set, reports packets that neither wake a link that wound down nor keep one up
	// (idle.go): what operating systems send on their own schedule, whether anyone listens or not.
	// Without a live link Send drops them (ErrNoLink); sent or received, they do not count as use.
	// nil = every packet counts.
	Chatter func(pkt []byte) bool
}

// Endpoint is the node's UDP socket with its peer links. Methods are safe for concurrent use.
type Endpoint struct {
	cfg        Config
	log        hclog.Logger
	self       Key
	names      atomic.Pointer[map[Key]string] // peer names for logs (Who), replaced by SetPeers
	tr         *quic.Transport
	ln         *quic.Listener
	quicConf   *quic.Config
	serverTLS  *tls.Config     // accepts links from peers in the peer set
	alias      *aliasConn      // the socket with send-side redirects
	relay      *relayConn      // the relay's virtual socket
	relayTr    *quic.Transport // QUIC over the relay
	relayLn    *quic.Listener
	probes     *rate.Limiter // bounds the signature checks inbound probes cost
	maxInbound int32         // streams a peer may have open to us (maxStreams; tests lower it)
	// inboundAll counts the streams all peers have open to us, up to maxInboundAll (maxStreamsAll).
	inboundAll    atomic.Int32
	maxInboundAll int32
	hardSocks     atomic.Int32    // sockets open for birthday attempts, all peers together (birthday.go)
	hardWindow    time.Duration   // how long a birthday attempt waits (birthdayWindow; tests lengthen it)
	ctx           context.Context // alive until Close
	cancel        context.CancelFunc
	wg            sync.WaitGroup

	// mu guards the following.
	mu      sync.RWMutex
	peers   map[Key]*peerState
	closed  bool
	mapping control.Mapping // this node's NAT mapping behaviour (SetMapping)
	ports   *control.Ports  // and its NAT's port pattern, if it allocates sequentially
	// live is every installed link not yet gone, closedTraffic what the gone ones carried, by path;
	// punches counts direct dials by the peer's mapping (stats.go).
	live          map[*link]struct{}
	closedTraffic map[string]Traffic
	punches       map[control.Mapping]Punches

	sendDrops atomic.Uint64
	noDirect  atomic.Bool
	hold      atomic.Bool // HoldLinks (idle.go)

	tunMu   sync.Mutex
	tunnels map[netip.AddrPort]*tunnel // servers reached over TCP (tunnel.go)

	// bindMu guards binding requests in flight (NAT discovery).
	bindMu   sync.Mutex
	bindings map[[control.TxIDSize]byte]chan netip.AddrPort
	hairpins map[txID]chan struct{}
}

// peerState is one peer's desired info, its current link and its path discovery. Fields under
// Endpoint.mu.
type peerState struct {
	info   Info
	link   *link
	links  map[*link]struct{} // every open link: the current one and retired ones streams still use
	wake   chan struct{}      // pokes the peer loop: endpoints changed, link up or down, path validated
	linkUp chan struct{}      // nil, or closed and cleared when a link comes up or the peer leaves: waitLink's signal
	cancel context.CancelFunc

	learned   []netip.AddrPort // where the peer's pings came from that its endpoints do not list
	pending   map[txID]pendingPing
	validated netip.AddrPort // the last address that answered a ping; zero = none yet
	recheck   bool           // the peer's endpoints changed: probe again even if a direct link is up
	sprayHit  netip.AddrPort // the address a birthday spray found (birthday.go): we dial it
	hardBusy  atomic.Bool    // a birthday attempt for this peer is under way
	inbound   atomic.Int32   // streams the peer opened to us that are still open, on any link

	// Winding down (idle.go). dormant: the link wound down and nothing is sent to the peer; the
	// peer loop sets and clears it. wanted: traffic for the peer arrived while dormant (Send,
	// DialStream); the loop takes it. peerSlept: the peer closed the current link as idle.
	// sleptDirect: the last link was direct and wound down as idle; the next relay link is interim.
	dormant     atomic.Bool
	wanted      atomic.Bool
	peerSlept   bool
	sleptDirect bool
}

// link is one QUIC connection to a peer. A link that a newer one replaced is retired: it takes no
// new streams or packets, and closes once its last stream ends (retireGrace at the soonest), so
// proxied TCP connections riding it survive a move from the relay to a direct path.
type link struct {
	conn    *quic.Conn
	path    string
	client  bool            // we dialed it: the peer's address may be aliased (alias.go)
	ctx     context.Context // done when the link is retired or its connection closes
	cancel  context.CancelFunc
	streams atomic.Int32
	used    atomic.Uint64 // packets sent and received and streams opened: idle.go watches it
	// up is when the link was installed; retiredAt when it was retired (written before retired is
	// set, read after it is seen set).
	up, retiredAt time.Time
	retired       atomic.Bool
	// interimUntil is set on a relay link that came up as the pair woke from an idle direct link:
	// until then streams wait for the direct link that follows (waitLink). Set before install.
	interimUntil time.Time
	release      func() // runs once the connection is gone (closes a socket of its own); may be nil
	// removed is set when the peer left the peer set: the link is being closed, and nothing that
	// still arrives on it (packets, streams) is delivered.
	removed atomic.Bool
	// fill is the datagram size that fills a QUIC packet, 0 for no padding; large counts the sends
	// that could be padded, to read fill again now and then (pad.go).
	fill  atomic.Int32
	large atomic.Uint32
}

func (l *link) addStream() {
	l.streams.Add(1)
	l.used.Add(1)
}

func (l *link) doneStream() {
	if l.streams.Add(-1) == 0 && l.retired.Load() && time.Since(l.retiredAt) >= retireGrace {
		l.conn.CloseWithError(0, "replaced") // else retire's timer closes it
	}
}

// interimWait is how long streams wait for the direct link after an interim relay link came up
// (link.interimUntil), given the relay link's round-trip time: the woken peer learns of the wake
// over the relay, the two punch and handshake, a few round trips in all; at most maxInterimWait,
// the most a connection made just after an idle spell waits when the direct path is gone for good.
func interimWait(rtt time.Duration) time.Duration {
	return min(maxInterimWait, 50*time.Millisecond+6*rtt)
}

const maxInterimWait = time.Second

// freshDirect is how young a direct link is still kept when a relay link to the same peer comes up
// (installLink). A direct link that stalls and falls back to the relay is always older: a stall takes
// over stallMin plus RelayDelay to act on.
const freshDirect = 2 * time.Second

// retireGrace is how long a retired link without streams stays open. The new link is up on our side
// before it is on the peer's (the side that completes the handshake first retires first); closing
// the old one at once left the peer with no link for that moment, and it dropped what it sent then
// (seen on every relay-to-direct move, in e2e TestIdleLinkWakes).
const retireGrace = time.Second

func (l *link) retire() {
	l.retiredAt = time.Now()
	l.retired.Store(true)
	l.cancel()
	time.AfterFunc(retireGrace, func() {
		if l.streams.Load() == 0 {
			l.conn.CloseWithError(0, "replaced")
		}
	})
}

// New opens the Endpoint on cfg.Conn and starts accepting links from peers.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Key == nil || cfg.Conn == nil || cfg.Receive == nil {
		return nil, errors.New("peer: Key, Conn and Receive are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 15 * time.Second
	}
	if cfg.RelayDelay == 0 {
		cfg.RelayDelay = time.Second
	}
	e := &Endpoint{
		cfg:        cfg,
		log:        cfg.Logger,
		peers:      make(map[Key]*peerState),
		bindings:   make(map[[control.TxIDSize]byte]chan netip.AddrPort),
		hairpins:   make(map[txID]chan struct{}),
		tunnels:    make(map[netip.AddrPort]*tunnel),
		probes:     rate.NewLimiter(probeRate, 2*probeRate),
		maxInbound: maxStreams, maxInboundAll: maxStreamsAll, hardWindow: birthdayWindow,
		live: make(map[*link]struct{}), closedTraffic: make(map[string]Traffic), punches: make(map[control.Mapping]Punches),
		quicConf: &quic.Config{
			EnableDatagrams:      true,
			InitialPacketSize:    InitialPacketSize,
			HandshakeIdleTimeout: cfg.DialTimeout,
			MaxIdleTimeout:       cfg.IdleTimeout,
			KeepAlivePeriod:      cfg.IdleTimeout / 3,
			// Each proxied TCP connection is a stream: allow many at once.
			MaxIncomingStreams:    maxStreams,
			MaxIncomingUniStreams: -1,
		},
	}
	// Stateless reset keys from the identity key, stable across restarts: a node restarted on a fixed
	// port answers packets of the links it lost with stateless resets, so its peers drop those at
	// once instead of after their idle timeout (once they send more than a keep-alive: quic-go
	// answers only packets over 42 bytes). The socket's transport and the relay's have keys of their
	// own: with one key, a packet carrying a connection ID of one, sent to the other, would draw that
	// live connection's valid reset token (RFC 9000 section 21.11). Birthday attempts' sockets
	// (birthday.go) get no key: their ports do not outlive the process anyway.
	sockKey := quic.StatelessResetKey(cfg.Key.StatelessResetKey("peer"))
	relayKey := quic.StatelessResetKey(cfg.Key.StatelessResetKey("peer relay"))
	var conn net.PacketConn
	e.alias, conn = newAliasConn(cfg.Conn)
	e.tr = &quic.Transport{Conn: conn, StatelessResetKey: &sockKey, ConnectionIDLength: connIDLen}
	e.self, _ = KeyOf(cfg.Key.Public())
	e.noDirect.Store(cfg.NoDirect)
	serverTLS, err := identity.TLSConfig(cfg.Key, ALPN, true, e.verifyInbound)
	if err != nil {
		return nil, err
	}
	e.serverTLS = serverTLS
	e.ln, err = e.tr.Listen(serverTLS, e.quicConf)
	if err != nil {
		return nil, fmt.Errorf("peer: listen: %w", err)
	}
	if uc, ok := cfg.Conn.(*net.UDPConn); ok {
		// After Listen: the transport has sized the buffer by then (receiveBufferCap says why).
		if err := capReceiveBuffer(uc); err != nil {
			e.log.Warn("cannot bound the socket's receive buffer", "err", err)
		}
	}
	e.relay = newRelayConn(e.writeSide, cfg.Conn.LocalAddr())
	e.relayTr = &quic.Transport{Conn: e.relay, StatelessResetKey: &relayKey, ConnectionIDLength: connIDLen}
	e.relayLn, err = e.relayTr.Listen(serverTLS, e.quicConf)
	if err != nil {
		e.ln.Close()
		return nil, fmt.Errorf("peer: listen on the relay: %w", err)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(3)
	go e.acceptLoop(e.ln, PathDirect)
	go e.acceptLoop(e.relayLn, PathRelay)
	go e.readSideChannel()
	return e, nil
}

// LocalAddr returns the UDP socket's local address.
func (e *Endpoint) LocalAddr() netip.AddrPort {
	if ua, ok := e.cfg.Conn.LocalAddr().(*net.UDPAddr); ok {
		return ua.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(e.cfg.Conn.LocalAddr().String())
	return ap
}

// verifyInbound accepts a link only from a peer in the current peer set.
func (e *Endpoint) verifyInbound(pub ed25519.PublicKey) error {
	k, _ := KeyOf(pub)
	e.mu.RLock()
	_, ok := e.peers[k]
	e.mu.RUnlock()
	if !ok {
		return fmt.Errorf("peer %s is not in this node's peer map", k)
	}
	return nil
}

func (e *Endpoint) acceptLoop(ln *quic.Listener, path string) {
	defer e.wg.Done()
	for {
		conn, err := ln.Accept(e.ctx)
		if err != nil {
			return
		}
		k, err := remoteKey(conn)
		if err != nil {
			conn.CloseWithError(1, "bad identity")
			continue
		}
		if path == PathDirect && e.noDirect.Load() {
			conn.CloseWithError(1, "direct paths disabled")
			continue
		}
		if !e.install(k, conn, path, false) {
			conn.CloseWithError(1, "not a peer")
		}
	}
}

func remoteKey(conn *quic.Conn) (Key, error) {
	pub, err := identity.PeerKey(rawCerts(conn.ConnectionState().TLS))
	if err != nil {
		return Key{}, err
	}
	k, _ := KeyOf(pub)
	return k, nil
}

func rawCerts(cs tls.ConnectionState) [][]byte {
	out := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		out[i] = c.Raw
	}
	return out
}

// install makes conn the live link to k and starts its receive loops. An older link is retired.
// client says whether we dialed it.
func (e *Endpoint) install(k Key, conn *quic.Conn, path string, client bool) bool {
	return e.installLink(k, &link{conn: conn, path: path, client: client})
}

// installLink is install for a prepared link (one with a release hook).
func (e *Endpoint) installLink(k Key, l *link) bool {
	conn, path := l.conn, l.path
	l.ctx, l.cancel = context.WithCancel(conn.Context())
	l.up = time.Now()
	// Before the link is published: a Send that finds it must find its fill size too (read after,
	// the sends until then went unpadded, all of them if this goroutine stalled).
	l.fill.Store(int32(readFill(conn)))
	e.mu.Lock()
	ps, ok := e.peers[k]
	if !ok || e.closed {
		e.mu.Unlock()
		return false
	}
	// At the bound, the retired link with the fewest streams makes room: a better path must not wait
	// for long-lived connections on old ones to end.
	var evict *link
	if len(ps.links) >= maxLinks {
		for r := range ps.links {
			if r != ps.link && (evict == nil || r.streams.Load() < evict.streams.Load()) {
				evict = r
			}
		}
	}
	// The link the new one replaces is retired; but a relay link does not replace a direct one that
	// just came up. The peer dialed both at once (waking a link that wound down: the relay at once,
	// direct as soon as a probe answers) and they arrived the other way round; the peer keeps the
	// direct one. Letting the relay link replace it left the two sides on different links, and this
	// side with none once the peer closed the one it had retired.
	old := ps.link
	if old == nil && path != PathDirect && ps.sleptDirect {
		l.interimUntil = l.up.Add(interimWait(conn.ConnectionStats().SmoothedRTT))
	}
	ps.sleptDirect = false
	kept := old != nil && old.path == PathDirect && path != PathDirect && time.Since(old.up) < freshDirect
	if kept {
		old = l
	} else {
		ps.link = l
	}
	ps.links[l] = struct{}{}
	e.live[l] = struct{}{}
	poke(ps.wake)
	ps.wakeDialersLocked()
	e.mu.Unlock()
	if evict != nil {
		e.log.Info("closing an old link to make room", "peer", e.Who(k), "links", maxLinks, "its_streams", evict.streams.Load())
		evict.conn.CloseWithError(0, "too many links")
	}
	if old != nil {
		old.retire()
	}
	if kept {
		e.log.Info("link up, kept the direct one", "peer", e.Who(k), "path", path, "endpoint", conn.RemoteAddr())
	} else {
		e.log.Info("link up", "peer", e.Who(k), "path", path, "endpoint", conn.RemoteAddr())
	}
	e.wg.Add(2)
	go e.receiveLoop(k, l)
	go e.acceptStreams(k, l)
	return true
}

func (e *Endpoint) receiveLoop(k Key, l *link) {
	defer e.wg.Done()
	for {
		pkt, err := l.conn.ReceiveDatagram(e.ctx)
		if err != nil {
			break
		}
		if !e.receive(k, l, pkt) || e.cfg.Flush == nil {
			continue
		}
		// The rest of the batch: what is queued already, up to maxBatch packets, then Flush.
		for range maxBatch - 1 {
			pkt, err := l.conn.ReceiveDatagram(pollContext{})
			if err != nil || pkt == nil || !e.receive(k, l, pkt) {
				break
			}
		}
		e.cfg.Flush()
	}
	// quic-go closes the datagram queue before it ends the connection's context with the cause
	// that closedIdle reads: wait for it (not when the endpoint is closing, which closes the
	// connection below). Read too early, a link that wound down as idle looked lost, and the relay
	// link that came up as the pair woke was not interim.
	select {
	case <-l.conn.Context().Done():
	case <-e.ctx.Done():
	}
	idle, slept := closedIdle(l.conn)
	l.conn.CloseWithError(0, "")
	if l.release != nil {
		l.release()
	}
	if l.client && l.path == PathDirect {
		e.alias.setAlias(addrPortOf(l.conn.RemoteAddr()), netip.AddrPort{})
	}
	final := l.traffic()
	e.mu.Lock()
	delete(e.live, l)
	t := e.closedTraffic[l.path]
	t.add(final)
	e.closedTraffic[l.path] = t
	current := false
	if ps, ok := e.peers[k]; ok {
		delete(ps.links, l)
		if ps.link == l {
			ps.link = nil
			ps.peerSlept = slept
			ps.sleptDirect = idle && l.path == PathDirect
			current = true
			poke(ps.wake)
		}
	}
	e.mu.Unlock()
	switch {
	case current && slept:
		e.log.Info("link idle, wound down by the peer", "peer", e.Who(k), "path", l.path)
	case current && !idle:
		e.log.Info("link down", "peer", e.Who(k), "path", l.path, "reason", context.Cause(l.conn.Context()))
	}
}

// receive passes one packet of link l to Config.Receive. It reports false if the link is closing.
func (e *Endpoint) receive(k Key, l *link, pkt []byte) bool {
	if l.removed.Load() {
		return false // no longer a peer: the link is closing
	}
	if !e.chatter(pkt) {
		l.used.Add(1)
	}
	e.cfg.Receive(k, unpad(pkt))
	return true
}

// maxBatch bounds the packets a receive loop passes on between two calls of Config.Flush.
const maxBatch = 64

// pollContext is the context of a ReceiveDatagram that must not wait: quic-go's datagram queue
// returns a datagram already queued, and otherwise, seeing Done closed, returns at once with
// Cause(ctx), which is nil here (Err is nil): (nil, nil) means "none queued". quic-go offers no
// non-blocking receive; TestPollContext pins this behaviour.
type pollContext struct{}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (pollContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (pollContext) Done() <-chan struct{}       { return closedDone }
func (pollContext) Err() error                  { return nil }
func (pollContext) Value(any) any               { return nil }

// wakeDialersLocked wakes every DialStream waiting for a link to the peer (waitLink).
func (ps *peerState) wakeDialersLocked() {
	if ps.linkUp != nil {
		close(ps.linkUp)
		ps.linkUp = nil
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// SetPeers replaces the desired peer set. Every link to a peer no longer present is closed at once,
// direct or relayed, current or retired (with the streams on it), and nothing more it sends is
// delivered; its new links are refused (verifyInbound). Peers whose endpoints changed are redialed
// (by the side that dials).
func (e *Endpoint) SetPeers(peers []Info) {
	want := make(map[Key]Info, len(peers))
	names := make(map[Key]string, len(peers))
	for _, p := range peers {
		if p.Key != e.self {
			want[p.Key] = p
			names[p.Key] = p.Name
		}
	}
	e.names.Store(&names)
	var toClose []*link
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	for k, ps := range e.peers {
		if _, ok := want[k]; !ok {
			ps.cancel()
			ps.wakeDialersLocked()
			for l := range ps.links {
				l.removed.Store(true)
				toClose = append(toClose, l)
			}
			delete(e.peers, k)
		}
	}
	for k, info := range want {
		ps, ok := e.peers[k]
		if !ok {
			ctx, cancel := context.WithCancel(e.ctx)
			ps = &peerState{info: info, wake: make(chan struct{}, 1), cancel: cancel, pending: make(map[txID]pendingPing),
				links: make(map[*link]struct{})}
			e.peers[k] = ps
			e.wg.Add(1)
			go e.peerLoop(ctx, k, ps)
			continue
		}
		if ps.info.Mapping != info.Mapping || (ps.info.Ports == nil) != (info.Ports == nil) {
			ps.info.Mapping = info.Mapping
			poke(ps.wake)
		}
		ps.info.Ports = info.Ports // a newer prediction: the next attempt aims there
		if !sameEndpoints(ps.info.Endpoints, info.Endpoints) {
			ps.info = info
			ps.validated, ps.learned = netip.AddrPort{}, nil // re-punch from scratch
			ps.recheck = true
			poke(ps.wake)
		}
	}
	e.mu.Unlock()
	e.relay.paths.retain(func(k Key) bool { _, ok := want[k]; return ok })
	for _, l := range toClose {
		l.conn.CloseWithError(0, "no longer a peer")
	}
}

func sameEndpoints(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Send transmits one packet to peer k. It returns ErrNoLink when no link is up. It blocks while the
// link's DATAGRAM queue is full (quic-go v0.65 waits for room, on a dead path until the idle
// timeout), so callers that must not block feed it from a queue of their own (node/sendq.go).
func (e *Endpoint) Send(k Key, pkt []byte) error {
	e.mu.RLock()
	ps := e.peers[k]
	var l *link
	if ps != nil {
		l = ps.link
	}
	e.mu.RUnlock()
	use := !e.chatter(pkt)
	if l == nil {
		if ps != nil && use && ps.wakeIfDormant() {
			return ErrLinkWaking
		}
		e.sendDrops.Add(1)
		return ErrNoLink
	}
	if use {
		l.used.Add(1)
	}
	err := l.sendDatagram(pkt)
	if err != nil && use && ps.wakeIfDormant() {
		return ErrLinkWaking // the link was closing as idle: it comes back
	}
	return err
}

// Status reports the link state of peer k.
func (e *Endpoint) Status(k Key) Status {
	e.mu.RLock()
	var l *link
	ps := e.peers[k]
	if ps != nil {
		l = ps.link
	}
	e.mu.RUnlock()
	if l == nil && ps != nil && ps.dormant.Load() {
		return Status{Path: PathIdle}
	}
	if l == nil {
		return Status{Path: PathNone}
	}
	st := Status{Path: l.path, RTT: l.conn.ConnectionStats().SmoothedRTT}
	if ap := e.sendsTo(l); ap.IsValid() {
		st.Endpoint = ap
	} else if r := e.relay.paths.current(k); r.IsValid() {
		st.Endpoint = r
	} else {
		st.Endpoint = e.relay.paths.first()
	}
	if st.Path == PathRelay && e.Tunneled(st.Endpoint) {
		st.Path = PathRelayTCP
	}
	return st
}

// Close closes every link, the listener and the socket, and waits for the Endpoint's goroutines.
// It is idempotent.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	var links []*link
	for _, ps := range e.peers {
		for l := range ps.links {
			links = append(links, l)
		}
	}
	e.mu.Unlock()
	// Tell peers goodbye first so they notice at once, then stop loops, then the socket.
	for _, l := range links {
		l.conn.CloseWithError(0, "node shutting down")
	}
	e.cancel()
	e.closeTunnels()
	e.ln.Close()
	e.relayLn.Close()
	e.wg.Wait()
	e.relayTr.Close()
	e.relay.Close()
	err := e.tr.Close()
	e.cfg.Conn.Close()
	return err
}

// isPeer reports whether k is in the peer set.
func (e *Endpoint) isPeer(k Key) bool {
	e.mu.RLock()
	_, ok := e.peers[k]
	e.mu.RUnlock()
	return ok
}
