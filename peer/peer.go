// Package peer owns a node's one UDP socket and the QUIC links to its peers over it: one QUIC
// connection per peer pair, authenticated by both nodes' identity keys, carrying the overlay's IP
// packets as QUIC DATAGRAM frames. It also dials the coordination server over the same socket, so the
// coord sees the address peers will see.
//
// It decides who dials (the side with the lower key), retries with backoff, replaces dead links, and
// reports per-peer path state. It knows nothing about IP, netstacks or SOCKS: packets are opaque bytes.
// NAT traversal (probing, relays) builds on this package later.
package peer

import (
	"bytes"
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

	"github.com/warren-net/warren/backoff"
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
// it fits from the first packet of a link on (TestMaxPacketSizeFits). After a connection migrates
// quic-go falls back to 1200-byte packets, so links are replaced rather than migrated when a path changes.
const MaxPacketSize = 1280

// maxStreams bounds the concurrent streams (proxied TCP connections) a peer may open to us.
const maxStreams = 16384

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

// Info is the desired state of one peer: who it is and where it can be reached. An empty Endpoints
// means the peer is offline: no dial is attempted, but an inbound link from it is still accepted.
type Info struct {
	Key       Key
	Endpoints []netip.AddrPort
}

// Status is the state of the link to one peer.
type Status struct {
	Path     string         // "direct" or "none" (relay comes with NAT traversal)
	Endpoint netip.AddrPort // remote address of the current link, if any
	RTT      time.Duration  // smoothed RTT of the current link
}

// Errors.
var (
	// ErrNoLink is returned by Send when there is no live link to the peer.
	ErrNoLink = errors.New("no link to peer")
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
	// AcceptStream is called, in a goroutine of its own, for every stream a peer opens, after its
	// header has been read. It must answer with Accept or Refuse. nil = streams are refused.
	AcceptStream func(from Key, h StreamHeader, c net.Conn)
	// Logger; nil = silent.
	Logger hclog.Logger
	// DialTimeout bounds one dial attempt (all endpoints in parallel). Default 5s.
	DialTimeout time.Duration
	// IdleTimeout is how long a link may stay silent before it is declared dead. Default 15s;
	// keep-alives go out at a third of it.
	IdleTimeout time.Duration
}

// Endpoint is the node's UDP socket with its peer links. Methods are safe for concurrent use.
type Endpoint struct {
	cfg      Config
	log      hclog.Logger
	self     Key
	tr       *quic.Transport
	ln       *quic.Listener
	quicConf *quic.Config
	ctx      context.Context // alive until Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// mu guards the following.
	mu     sync.RWMutex
	peers  map[Key]*peerState
	closed bool

	sendDrops atomic.Uint64
}

// peerState is one peer's desired info plus its current link. Fields under Endpoint.mu.
type peerState struct {
	info   Info
	link   *quic.Conn
	wake   chan struct{} // pokes the dialer: endpoints changed or link died
	cancel context.CancelFunc
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
	e := &Endpoint{
		cfg:   cfg,
		log:   cfg.Logger,
		peers: make(map[Key]*peerState),
		tr:    &quic.Transport{Conn: cfg.Conn},
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
	e.self, _ = KeyOf(cfg.Key.Public())
	serverTLS, err := identity.TLSConfig(cfg.Key, ALPN, true, e.verifyInbound)
	if err != nil {
		return nil, err
	}
	e.ln, err = e.tr.Listen(serverTLS, e.quicConf)
	if err != nil {
		return nil, fmt.Errorf("peer: listen: %w", err)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(1)
	go e.acceptLoop()
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

// DialControl opens a QUIC connection to the coordination server from the node's socket. tlsConf
// carries the control ALPN and the coord key check.
func (e *Endpoint) DialControl(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
	return e.tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsConf, conf)
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

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.Accept(e.ctx)
		if err != nil {
			return
		}
		k, err := remoteKey(conn)
		if err != nil {
			conn.CloseWithError(1, "bad identity")
			continue
		}
		if !e.install(k, conn) {
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

// install makes conn the live link to k (replacing an older one) and starts its receive loop.
func (e *Endpoint) install(k Key, conn *quic.Conn) bool {
	e.mu.Lock()
	ps, ok := e.peers[k]
	if !ok || e.closed {
		e.mu.Unlock()
		return false
	}
	old := ps.link
	ps.link = conn
	e.mu.Unlock()
	if old != nil && old != conn {
		old.CloseWithError(0, "replaced")
	}
	e.log.Debug("link up", "peer", k, "endpoint", conn.RemoteAddr())
	e.wg.Add(2)
	go e.receiveLoop(k, conn)
	go e.acceptStreams(k, conn)
	return true
}

func (e *Endpoint) receiveLoop(k Key, conn *quic.Conn) {
	defer e.wg.Done()
	for {
		pkt, err := conn.ReceiveDatagram(e.ctx)
		if err != nil {
			break
		}
		e.cfg.Receive(k, pkt)
	}
	conn.CloseWithError(0, "")
	e.mu.Lock()
	if ps, ok := e.peers[k]; ok && ps.link == conn {
		ps.link = nil
		poke(ps.wake)
	}
	e.mu.Unlock()
	e.log.Debug("link down", "peer", k)
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// SetPeers replaces the desired peer set. Links to peers no longer present are closed; peers whose
// endpoints changed are redialed (by the side that dials).
func (e *Endpoint) SetPeers(peers []Info) {
	want := make(map[Key]Info, len(peers))
	for _, p := range peers {
		if p.Key != e.self {
			want[p.Key] = p
		}
	}
	var toClose []*quic.Conn
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	for k, ps := range e.peers {
		if _, ok := want[k]; !ok {
			ps.cancel()
			if ps.link != nil {
				toClose = append(toClose, ps.link)
			}
			delete(e.peers, k)
		}
	}
	for k, info := range want {
		ps, ok := e.peers[k]
		if !ok {
			ctx, cancel := context.WithCancel(e.ctx)
			ps = &peerState{info: info, wake: make(chan struct{}, 1), cancel: cancel}
			e.peers[k] = ps
			if bytes.Compare(e.self[:], k[:]) < 0 {
				e.wg.Add(1)
				go e.dialLoop(ctx, k, ps)
			}
			continue
		}
		if !sameEndpoints(ps.info.Endpoints, info.Endpoints) {
			ps.info = info
			poke(ps.wake)
		}
	}
	e.mu.Unlock()
	for _, c := range toClose {
		c.CloseWithError(0, "no longer a peer")
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

// dialLoop keeps a link to k up while k is a peer with endpoints. Only the lower key runs it, so two
// peers never race to build two connections.
func (e *Endpoint) dialLoop(ctx context.Context, k Key, ps *peerState) {
	defer e.wg.Done()
	bo := backoff.New(250*time.Millisecond, 10*time.Second)
	for {
		e.mu.RLock()
		link, eps := ps.link, ps.info.Endpoints
		e.mu.RUnlock()
		var wait <-chan time.Time
		if link == nil && len(eps) > 0 {
			conn, err := e.dialAny(ctx, k, eps)
			if err == nil {
				bo.Reset()
				if !e.install(k, conn) {
					conn.CloseWithError(0, "not a peer")
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			e.log.Debug("dial failed", "peer", k, "retry_in", d, "error", err)
			wait = time.After(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-ps.wake:
			bo.Reset()
		case <-wait:
		}
	}
}

// dialAny dials every endpoint at once and keeps the first link that completes its handshake.
func (e *Endpoint) dialAny(ctx context.Context, k Key, eps []netip.AddrPort) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	tlsConf, err := identity.TLSConfig(e.cfg.Key, ALPN, false, func(pub ed25519.PublicKey) error {
		if !bytes.Equal(pub, k[:]) {
			return fmt.Errorf("endpoint answered with key %s, want %s", identity.ShortID(pub), k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	type result struct {
		conn *quic.Conn
		err  error
	}
	results := make(chan result, len(eps))
	for _, ep := range eps {
		go func() {
			c, err := e.tr.Dial(ctx, net.UDPAddrFromAddrPort(ep), tlsConf, e.quicConf)
			results <- result{c, err}
		}()
	}
	var winner *quic.Conn
	var errs []error
	for range eps {
		r := <-results
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case winner == nil:
			winner = r.conn
			cancel() // stop the others
		default:
			r.conn.CloseWithError(0, "lost the race")
		}
	}
	if winner != nil {
		return winner, nil
	}
	return nil, fmt.Errorf("dial peer %s: %w", k, errors.Join(errs...))
}

// Send transmits one packet to peer k. It returns ErrNoLink when no link is up; it may block briefly
// while the link's send queue is full (backpressure to the netstack).
func (e *Endpoint) Send(k Key, pkt []byte) error {
	e.mu.RLock()
	ps := e.peers[k]
	var link *quic.Conn
	if ps != nil {
		link = ps.link
	}
	e.mu.RUnlock()
	if link == nil {
		e.sendDrops.Add(1)
		return ErrNoLink
	}
	return link.SendDatagram(pkt)
}

// Status reports the link state of peer k.
func (e *Endpoint) Status(k Key) Status {
	e.mu.RLock()
	var link *quic.Conn
	if ps := e.peers[k]; ps != nil {
		link = ps.link
	}
	e.mu.RUnlock()
	if link == nil {
		return Status{Path: "none"}
	}
	st := Status{Path: "direct", RTT: link.ConnectionStats().SmoothedRTT}
	if ua, ok := link.RemoteAddr().(*net.UDPAddr); ok {
		st.Endpoint = ua.AddrPort()
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
	var links []*quic.Conn
	for _, ps := range e.peers {
		if ps.link != nil {
			links = append(links, ps.link)
		}
	}
	e.mu.Unlock()
	// Tell peers goodbye first so they notice at once, then stop loops, then the socket.
	for _, c := range links {
		c.CloseWithError(0, "node shutting down")
	}
	e.cancel()
	e.ln.Close()
	e.wg.Wait()
	err := e.tr.Close()
	e.cfg.Conn.Close()
	return err
}
