// Package node is the warren daemon: it ties together the control connection to the coordination
// server, the peer links (package peer), the userspace network stack (package netstack), the local
// SOCKS5 proxy (package socks) and the local API for the CLI. It routes IP packets between the netstack
// and the peer links by virtual IP and enforces who may send what.
//
// It knows no wire details of any part: those live in control, peer, netstack and internal/packet
// (the few IP header fields its packet filters read).
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/backoff"
	"github.com/warren-net/warren/internal/bicopy"
	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/internal/peercred"
	"github.com/warren-net/warren/internal/portmap"
	"github.com/warren-net/warren/internal/privdir"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

// Port is a local service exposed on the node's virtual IPs.
type Port struct {
	Proto string // "tcp"
	Port  uint16
}

// Config configures a Node. Fields are read once by Start.
type Config struct {
	StateDir string // required: identity key, coord pin and the API socket live here
	// Coord is required: the coordination server's HOST:PORT, or several servers that share one
	// database and key, comma-separated, which the node fails over between in order.
	Coord    string
	CoordKey string // pinned coord fingerprint; "" = the saved pin, or trust on first use
	Name     string // required: the node's name (a DNS label)
	Listen   string // UDP address for the node's socket; default ":0"
	SOCKS    string // SOCKS5 (and HTTP) proxy listen address; loopback only unless ProxyUser is set; "" = none
	HTTP     string // an extra listen address for the same proxy, for HTTP-only clients; "" = none
	// ProxyUser and ProxyPassword, if ProxyUser is set, are required from every proxy client.
	ProxyUser, ProxyPassword string
	// ProxyUsers names the local users (names or uids, comma-separated, or "all") who may use the
	// proxy besides the node's own user and root, who can read its key anyway. A local client is
	// told by the owner of its socket (Linux; elsewhere every local user may use the proxy).
	ProxyUsers string
	// OverlayOnly refuses proxy destinations outside the overlay instead of dialing them from the host.
	OverlayOnly bool
	// AllowLocal lets proxy clients reach the host's own addresses (loopback, its interfaces). Off by
	// default, so the proxy cannot become a way into the host.
	AllowLocal bool
	Expose     []Port // local services reachable from peers
	// ProxyHeader names exposed TCP ports whose local connections start with a PROXY protocol v2
	// header carrying the peer's overlay address (`--expose tcp:PORT+proxy`).
	ProxyHeader []uint16
	Logger      hclog.Logger
	// CoordTimeout is how long Start keeps trying to reach the coordination server. Default 30s.
	CoordTimeout time.Duration
	// PacketPathTCP sends proxied TCP through the netstacks, and TCP from TUN devices as they send
	// it, as IP packets (the packet path) instead of one QUIC stream per connection (the stream
	// path, the default and the fast one; devstack.go).
	PacketPathTCP bool
	// NoDirect sends all peer traffic through the relay (no hole punching); for tests and
	// networks where direct UDP between nodes must not be used.
	NoDirect bool
	// LinkIdle is how long a peer link may carry nothing before it winds down (no keep-alives, no
	// probes) until the next packet or connection for that peer brings it back, through the relay
	// at once and then direct (peer/idle.go); 0 = links never wind down. `warren up` defaults to
	// DefaultLinkIdle.
	LinkIdle time.Duration
	// TUN, if set, names a kernel TUN device to create for the overlay (privileged: root or
	// CAP_NET_ADMIN); "" = off, the rootless default. See tun.go.
	TUN string
	// AuthKey, if set, is presented at every login: the coord adds the node to the key's network
	// without a password (see control.Login.AuthKey). A refused key stops the node (logout.go).
	AuthKey string
	// Ephemeral asks the coord to remove the node once it is offline; the node logs out when it
	// closes. A node that joins with an ephemeral auth key is ephemeral without it.
	Ephemeral bool
	// Proxy is the HTTP proxy (http://[user:pass@]host:port) the TCP fallback goes through when UDP
	// to a server is blocked; "" = HTTPS_PROXY/https_proxy, "none" = never a proxy.
	Proxy string
	// Metrics, if set, is a loopback TCP address to serve Prometheus metrics on (/metrics), besides
	// GET /v1/metrics on the local API (metrics.go). "" = the local API only.
	Metrics string
	// Advertise lists extra addresses peers can reach the node's UDP socket at, such as a port
	// forward set up by hand on the home router (`--advertise HOST:PORT`). They are reported to the
	// coord as candidate endpoints, ahead of the interface addresses. See CheckAdvertise.
	Advertise []netip.AddrPort
	// Portmap asks the home router (the default gateway) to map the node's UDP port with PCP,
	// NAT-PMP or UPnP-IGD and offers the external address to peers (portmap.go). `warren up` turns it on unless
	// --no-portmap; off by default here, so that a node made in a test never talks to the host's
	// router. A socket bound to loopback is never mapped.
	Portmap bool
}

// Node is a running warren node. Its state is split by concern into parts, each with its own lock
// (or none, for what is read-only once set): the peer state and the route table it publishes, the
// relays, the proxy, the send queues, the TUN bridge. Node itself ties them together and keeps what
// it learned about itself at login under mu.
type Node struct {
	// Set by New, or by Start before anything else runs; read-only afterwards.
	cfg   Config
	log   hclog.Logger
	key   *identity.Key
	ep    *peer.Endpoint
	coord *coordClient
	api   *apiServer
	proxy *proxyServer // nil without a proxy address
	// proxyUsers says which local users may use the proxy; proxyRefused counts the others' tries.
	proxyUsers   peercred.Policy
	proxyRefused atomic.Uint64
	exposed      map[Port]bool   // local services reachable from peers
	proxyHeader  map[uint16]bool // exposed TCP ports that get a PROXY v2 header (Config.ProxyHeader)
	whois        whoisTable      // local connections made for peers (whois.go)
	overlay      overlay         // the overlay's address pools; set once at first login
	registry     *metrics.Registry
	metricsSrv   *metrics.Server // Config.Metrics; nil without it
	// started is set once Start has succeeded: what Start sets is then safe to read (metrics.go).
	started atomic.Bool
	// portmap keeps the router's mapping of the UDP port; nil when off (portmap.go).
	portmap atomic.Pointer[portmap.Mapper]
	// portsBusy: a measurement of the NAT's port counter is under way (refreshPorts).
	portsBusy atomic.Bool
	// nudged is when the node last nudged the coord (nudgeCoord), in Unix nanoseconds.
	nudged atomic.Int64
	// inboundExposed counts connections peers made to exposed ports (dialLocal).
	inboundExposed atomic.Uint64

	ctx    context.Context // alive until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // coordLoop, NAT discovery

	// The parts, each safe for concurrent use.
	peers      *peerState                     // peer map and access rules (peers.go)
	routes     atomic.Pointer[routeTable]     // the packet path's lock-free view; peers publishes it (route.go)
	relays     *relaySet                      // standalone and coord relays (relayclient.go)
	stack      atomic.Pointer[netstack.Stack] // set by Start
	tun        atomic.Pointer[tunBridge]      // TUN mode, or while `warren run` devices are attached (tun.go)
	attached   attachSet                      // devices of `warren run` (attach.go)
	sendq      sendQueues                     // per-peer outbound queues (sendq.go)
	joins      joinRequests                   // join requests awaiting this node's approval (joins.go)
	limits     *rateLimiter                   // broadcast/multicast packets per sender (broadcast.go)
	drops      dropCounters                   // packets dropped, by reason
	egressN    egressCounters                 // `warren run` egress dials (egress.go)
	devStreams streamCounters                 // streams the device stacks opened to peers (devstack.go)
	listens    *listenProbe                   // which exposed ports listen where (listens.go)
	aclLog     logLimiter                     // debug lines about refusals (acl.go)
	stop       stopSignal                     // Stopped, Err and logout state (logout.go)
	// streamRelays are the relays of exposed-port streams (stream.go): Close closes them and waits,
	// since a relay whose stream has ended (half-closed) and whose service is quiet waits on the
	// service's socket alone, parked by bicopy.
	streamRelays bicopy.Group

	// mu guards the following.
	mu        sync.Mutex
	welcome   *control.Welcome // immutable once set: replaced, never modified, so readers may keep it
	port      uint16           // the UDP socket's port, cached for restarts
	coordAddr netip.AddrPort   // the coord's address at the last login
	probePort uint16           // the coord's NAT-discovery port
	nat       *peer.NATReport  // the last NAT discovery
	// dnsSetup says how the host's resolver uses the DNS server (resolved.go); dnsRegistered is the
	// device registered with systemd-resolved, to revert at exit.
	dnsSetup, dnsRegistered string
	// coordTrouble is why the last login to the coord failed, "" after one worked (Status).
	coordTrouble string
	closed       bool
}

// dropCounters count the packets the node drops, by reason (Status reports them).
type dropCounters struct {
	spoofed     atomic.Uint64 // a source address not of the sending peer, or not IP
	noRoute     atomic.Uint64 // a destination no peer owns
	rateLimited atomic.Uint64 // broadcast or multicast over the sender's rate
	acl         atomic.Uint64 // refused by access rules (acl.go)
}

// New validates cfg. Nothing runs until Start.
func New(cfg Config) (*Node, error) {
	if cfg.StateDir == "" || cfg.Coord == "" || cfg.Name == "" {
		return nil, errors.New("node: state dir, coordination server and name are required")
	}
	if cfg.Proxy != "" && cfg.Proxy != "none" {
		if u, err := url.Parse(cfg.Proxy); err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("node: --proxy %q: want http://[user:pass@]host:port", cfg.Proxy)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = ":0"
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.CoordTimeout == 0 {
		cfg.CoordTimeout = 30 * time.Second
	}
	for _, addr := range []string{cfg.SOCKS, cfg.HTTP} {
		if addr == "" || cfg.ProxyUser != "" {
			continue
		}
		if err := checkLoopback(addr); err != nil {
			return nil, err
		}
	}
	if cfg.Metrics != "" {
		if err := metrics.CheckLoopback(cfg.Metrics); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	proxyUsers, err := peercred.ParsePolicy(peercred.OwnerPolicy(uint32(os.Getuid())), cfg.ProxyUsers)
	if err != nil {
		return nil, fmt.Errorf("node: --proxy-users: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, exposed: make(map[Port]bool), limits: newRateLimiter(broadcastRate, broadcastBurst), proxyUsers: proxyUsers,
		listens: newListenProbe()}
	for _, p := range cfg.Expose {
		if (p.Proto != "tcp" && p.Proto != "udp") || p.Port == 0 {
			return nil, fmt.Errorf("node: cannot expose %s:%d (want tcp or udp, ports 1-65535)", p.Proto, p.Port)
		}
		n.exposed[p] = true
	}
	if len(cfg.Advertise) > MaxAdvertise {
		return nil, fmt.Errorf("node: --advertise: %d addresses, at most %d", len(cfg.Advertise), MaxAdvertise)
	}
	for _, ap := range cfg.Advertise {
		if err := CheckAdvertise(ap); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	n.proxyHeader = make(map[uint16]bool)
	for _, p := range cfg.ProxyHeader {
		if !n.exposed[Port{"tcp", p}] {
			return nil, fmt.Errorf("node: PROXY header for tcp:%d, which is not exposed", p)
		}
		n.proxyHeader[p] = true
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.registry = n.newRegistry()
	n.sendq.log = n.log
	n.peers = newPeerState(cfg.Name, n.log, &n.routes)
	n.relays = newRelaySet(n.ctx, n.log.Named("relay"), n.peers.consent)
	return n, nil
}

// checkLoopback refuses proxy addresses beyond loopback: without authentication the proxy would be
// open to the network.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("proxy address %q: %w", hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to serve the proxy on %q without authentication: use a loopback address (127.0.0.1, ::1) or set a proxy user and password", hostport)
	}
	return nil
}

// DefaultLinkIdle is `warren up`'s Config.LinkIdle: long enough that a session between bursts (a
// game's lobby, an SSH prompt: those keep a stream open anyway) keeps its link, short enough that a
// node with many quiet peers stops waking for them within minutes.
const DefaultLinkIdle = 2 * time.Minute

// peerIdleTimeout is how long a peer link may stay silent before it is declared dead; keep-alives go
// out at a third of it. The idle timer restarts with the first keep-alive after the last packet
// received, so the link to a peer that vanished without a goodbye (kill -9, power loss) is freed
// 10-13.3 s later: within the 15 s in which its peers must see it gone.
const peerIdleTimeout = 10 * time.Second

// Start brings the node up: identity, local API and proxy listeners (bound before anything reaches
// the coord, so a port in use leaves nothing behind there), UDP socket, login (retrying up to
// CoordTimeout while the coord is unreachable, and as long as it answers with transient errors),
// netstack, and then the proxy serves. On error everything started so far is closed again.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(n.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := privdir.Check(n.cfg.StateDir, "state directory"); err != nil {
		return err // another user could replace the key, the coord pin or the API socket in it
	}
	key, created, err := identity.LoadOrCreate(filepath.Join(n.cfg.StateDir, "key.pem"))
	if err != nil {
		return err
	}
	n.key = key
	n.peers.setKey(key.Fingerprint())
	if created {
		n.log.Info("created identity key", "key", key.Fingerprint())
	}
	pinPath := filepath.Join(n.cfg.StateDir, "coord.pin")
	pin, err := loadPin(pinPath, n.cfg.CoordKey)
	if err != nil {
		return err
	}
	// The API socket comes first: it also tells us whether another node already uses this state dir.
	if n.api, err = startAPI(n, filepath.Join(n.cfg.StateDir, "warren.sock"), n.log.Named("api")); err != nil {
		return err
	}
	if err := n.startMetrics(); err != nil {
		return err
	}

	// The proxy's listeners too, before the login: a port in use fails the start before the coord
	// registers anything.
	if n.cfg.SOCKS != "" || n.cfg.HTTP != "" {
		where := proxyListen{socks: n.cfg.SOCKS, http: n.cfg.HTTP, socket: filepath.Join(n.cfg.StateDir, ProxySocketFile)}
		if n.proxy, err = listenProxy(where); err != nil {
			return err
		}
	}

	cache, err := loadCache(n.cachePath())
	if err != nil {
		n.log.Warn("ignoring the peer cache", "error", err)
	}
	pc, err := n.openSocket(cache)
	if err != nil {
		return err
	}
	n.ep, err = peer.New(peer.Config{Key: key, Conn: pc, Receive: n.receiveFunc(), Flush: n.flushReceived, AcceptStream: n.acceptStream,
		NoDirect: n.cfg.NoDirect, IdleTimeout: peerIdleTimeout, LinkIdle: n.cfg.LinkIdle, Logger: n.log.Named("peer"), Tunnel: n.openTunnel,
		OnPortsUsed: n.refreshPorts, OnStall: n.nudgeCoord, Chatter: linkLocalMulticast})
	if err != nil {
		pc.Close()
		return err
	}
	n.sendq.link = n.ep
	n.relays.bind(key, n.ep)

	n.coord = &coordClient{
		addrs: strings.Split(n.cfg.Coord, ","), key: key, pinPath: pinPath, pin: pin, log: n.log.Named("coord"),
		dial: n.ep.DialControl,
		loginMsg: func() *control.Login {
			return &control.Login{Version: control.Version, Name: n.cfg.Name, Endpoints: n.localEndpoints(),
				AuthKey: n.cfg.AuthKey, Ephemeral: n.cfg.Ephemeral}
		},
		handle:    n.handleControl,
		onConnect: n.coordConnected,
	}
	n.startPortmap() // in the background: the first login goes ahead, the mapping is reported when made
	loginTimeout := n.cfg.CoordTimeout
	if cache != nil {
		loginTimeout = min(loginTimeout, 3*time.Second) // do not keep known tunnels waiting for long
	}
	w, err := n.firstLogin(ctx, loginTimeout, cache == nil)
	switch {
	case err == nil:
		n.log.Info("logged in", "name", cmp.Or(w.Name, n.cfg.Name), "ipv4", w.IPv4, "ipv6", w.IPv6, "networks", w.Networks, "observed", w.Observed)
	case cache != nil && canStartFromCache(err):
		// The coord is down: come up with what we knew, keep trying it in the background.
		w = cache.Welcome
		n.handleControl(&control.Msg{Type: control.TypeWelcome, Welcome: cache.Welcome})
		n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{Peers: cache.Peers, ACLs: cache.ACLs}})
		n.relays.use(w, netip.AddrPort{}) // a standalone relay does not need the coord
		n.log.Warn("coordination server unreachable; starting from the cached peer map, tunnels to known peers will come up",
			"cached_at", cache.SavedAt, "peers", len(cache.Peers), "error", err)
	default:
		return err
	}
	n.mu.Lock()
	n.welcome = w
	n.mu.Unlock()
	n.overlay = []netip.Prefix{w.Prefix4, w.Prefix6}
	for _, ap := range n.cfg.Advertise {
		if n.overlay.contains(ap.Addr()) {
			return fmt.Errorf("node: --advertise %s is inside the overlay (%s, %s): peers would send it into the overlay", ap, w.Prefix4, w.Prefix6)
		}
	}
	n.saveCache()

	stack, err := netstack.New(netstack.Config{
		Addrs: []netip.Prefix{netip.PrefixFrom(w.IPv4, w.Prefix4.Bits()), netip.PrefixFrom(w.IPv6, w.Prefix6.Bits())},
		// The overlay, plus broadcast and multicast, which fan out to every peer.
		Routes: []netip.Prefix{w.Prefix4, w.Prefix6, netip.MustParsePrefix("255.255.255.255/32"),
			netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("ff00::/8")},
		MTU:       peer.MaxPacketSize,
		Output:    n.outputFunc(),
		Exposed:   func(proto string, port uint16) bool { return n.exposed[Port{proto, port}] },
		Admit:     n.stackAdmit(w.IPv4, w.IPv6),
		DialLocal: n.stackDialLocal,
		Logger:    n.log.Named("netstack"),
	})
	if err != nil {
		return fmt.Errorf("start netstack: %w", err)
	}
	n.stack.Store(stack)
	if err := n.startTUN(w); err != nil {
		return err
	}
	for p := range n.exposed {
		// In TUN mode the netstack gets only flows to services that listen on loopback (listens.go).
		if p.Proto == "udp" {
			if err := stack.ExposeUDP(p.Port); err != nil {
				return fmt.Errorf("expose udp:%d: %w", p.Port, err)
			}
		}
	}
	var overlayAddrs []netip.Addr
	if n.cfg.TUN != "" {
		overlayAddrs = []netip.Addr{w.IPv4, w.IPv6}
	}
	n.warnUnreachable(n.listens, overlayAddrs)

	n.wg.Add(1)
	go n.coordLoop()

	if n.proxy != nil {
		err := n.proxy.serve(socks.Config{Dial: n.dial, Resolve: n.resolve, ListenUDP: n.listenUDP,
			Logger: n.log.Named("proxy"), User: n.cfg.ProxyUser, Password: n.cfg.ProxyPassword,
			UDPClientAllowed: n.proxyUsers.AllowsDatagram,
			FanOut:           func(ip netip.Addr) bool { return n.overlay.fanOut(ip) },
			Peer:             func(ip netip.Addr) bool { _, ok := n.routes.Load().owner[ip]; return ok }}, n.localUsersOnly, n.log)
		if err != nil {
			return err
		}
	}
	n.started.Store(true)
	return nil
}

// HTTPAddr returns the extra HTTP proxy listen address, or nil.
func (n *Node) HTTPAddr() net.Addr {
	if n.proxy == nil {
		return nil
	}
	return addr(n.proxy.httpLn)
}

// SOCKSAddr returns the proxy's listen address, or nil if it is disabled or not started.
func (n *Node) SOCKSAddr() net.Addr {
	if n.proxy == nil {
		return nil
	}
	return addr(n.proxy.socksLn)
}

// openSocket opens the node's UDP socket. With port 0 (the default) it first tries the port it used last
// time (from the cache), so peers that cached our endpoints can still reach us after a restart.
func (n *Node) openSocket(cache *cachedState) (*net.UDPConn, error) {
	if host, port, err := net.SplitHostPort(n.cfg.Listen); err == nil && port == "0" && cache != nil && cache.Port != 0 {
		if ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, fmt.Sprint(cache.Port))); err == nil {
			if pc, err := net.ListenUDP("udp", ua); err == nil {
				n.setPort(pc)
				return pc, nil
			}
		}
	}
	udpAddr, err := net.ResolveUDPAddr("udp", n.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", n.cfg.Listen, err)
	}
	pc, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	n.setPort(pc)
	return pc, nil
}

func (n *Node) setPort(pc *net.UDPConn) {
	n.mu.Lock()
	n.port = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	n.mu.Unlock()
}

// canStartFromCache reports whether a failed first login is an outage (start from the cache) rather
// than a refusal (key mismatch, login refused), which must stop the node.
func canStartFromCache(err error) bool {
	return !errors.Is(err, ErrCoordKeyMismatch) && !isRefusal(err)
}

// isRefusal reports whether err is the coord refusing the login for good: a refusal that needs a
// person (a bad name, a blocked address, a bad auth key, a ban...). Transient ones (storage full,
// rate limited, an internal error) are not: the node tries again.
func isRefusal(err error) bool {
	cerr, ok := errors.AsType[*control.Error](err)
	return ok && !cerr.Code.Transient()
}

// Retry delays of the first login: 0.5 s doubling to 10 s, each ±25% (internal/backoff).
const (
	firstLoginMinDelay = 500 * time.Millisecond
	firstLoginMaxDelay = 10 * time.Second
)

// firstLogin connects to the coord, retrying with jittered backoff. It gives up once the coord has
// not answered for timeout; while it answers with a transient refusal (storage full, rate limited,
// an internal error) and keepTrying is set, it goes on until ctx ends, the reason in its log and in
// Status. A key mismatch or a refusal that needs a person is final.
func (n *Node) firstLogin(ctx context.Context, timeout time.Duration, keepTrying bool) (*control.Welcome, error) {
	bo := backoff.New(firstLoginMinDelay, firstLoginMaxDelay)
	deadline := time.Now().Add(timeout) // moved on by each transient answer when keepTrying
	tries := 0
	lastReason := ""
	for {
		tries++
		tctx, cancel := context.WithDeadline(ctx, deadline)
		w, err := n.coord.connect(tctx)
		cancel()
		if err == nil {
			n.setCoordTrouble("")
			return w, nil
		}
		if errors.Is(err, ErrCoordKeyMismatch) || isRefusal(err) {
			n.setCoordTrouble(err.Error())
			return nil, err
		}
		wait := bo.Next()
		reason := err.Error()
		if cerr, ok := errors.AsType[*control.Error](err); ok { // it answered: a transient refusal
			reason = fmt.Sprintf("%s (%s)", cerr.Message, cerr.Code)
			if keepTrying {
				deadline = time.Now().Add(timeout)
			}
			if reason != lastReason || tries%10 == 0 {
				n.log.Warn("coordination server cannot log this node in now; retrying", "coord", n.cfg.Coord,
					"reason", cerr.Message, "code", cerr.Code, "retry_in", wait.Round(time.Millisecond), "tries", tries)
			}
		} else if tries == 1 {
			n.log.Warn("coordination server not reachable yet, retrying", "coord", n.cfg.Coord, "error", err, "giving_up_after", timeout)
		}
		lastReason = reason
		n.setCoordTrouble(reason)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("logging in to the coordination server at %s: %w (last: %s)", n.cfg.Coord, ctx.Err(), reason)
		case <-time.After(min(wait, time.Until(deadline))):
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("cannot reach the coordination server at %s after %d tries in %s: %w", n.cfg.Coord, tries, timeout, err)
		}
	}
}

// setCoordTrouble records why the last login failed ("" = it worked), for Status.
func (n *Node) setCoordTrouble(reason string) {
	n.mu.Lock()
	n.coordTrouble = reason
	n.mu.Unlock()
}

// coordLoop reads the control connection and reconnects with jittered backoff when it drops; peer
// links keep working in the meantime. State changes are logged once, not per try.
func (n *Node) coordLoop() {
	defer n.wg.Done()
	bo := backoff.New(time.Second, 30*time.Second)
	lastReason := "" // the last refusal logged
	for {
		if n.coord.connected() {
			err := n.coord.readLoop()
			if n.ctx.Err() != nil {
				return
			}
			addr := n.coord.current()
			n.log.Warn("lost the coordination server; tunnels stay up, reconnecting in the background", "coord", addr, "error", err)
			n.coord.next(addr, err) // a server that went away is tried again last
			n.relays.coordLost()
			n.ep.HoldLinks(true) // no link winds down, wound-down ones come back (peer/idle.go)
		}
		// With several servers, the first try after a loss goes to the next one at once: the loss
		// took the idle timeout to notice already, and that server has not failed yet.
		failover := len(n.coord.addrs) > 1
		for {
			wait := bo.Next()
			if failover {
				wait, failover = 0, false
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			w, err := n.coord.connect(ctx)
			cancel()
			if err == nil {
				bo.Reset()
				lastReason = ""
				n.mu.Lock()
				n.coordTrouble = ""
				if n.welcome != nil && (w.IPv4 != n.welcome.IPv4 || w.IPv6 != n.welcome.IPv6) {
					n.log.Error("coordination server assigned different addresses; restart the node to use them", "ipv4", w.IPv4)
				}
				n.setNetworksLocked(w.Networks)
				n.mu.Unlock()
				n.saveCache()
				n.ep.HoldLinks(false)
				n.log.Info("connected to the coordination server", "coord", n.coord.current())
				break
			}
			if errors.Is(err, ErrCoordKeyMismatch) {
				n.log.Error("coordination server key changed; not reconnecting", "error", err)
				return
			}
			if fatalLogin(err) {
				n.fatal(err)
				return
			}
			n.setCoordTrouble(err.Error())
			if cerr, ok := errors.AsType[*control.Error](err); ok && cerr.Message != lastReason {
				lastReason = cerr.Message
				n.log.Warn("coordination server refused the login for now; retrying", "reason", cerr.Message, "code", cerr.Code)
			}
		}
	}
}

// localEndpoints lists the addresses peers may reach the UDP socket at: the router's mapping
// (portmap.go) and the advertised ones (Config.Advertise) first, then the socket's own addresses.
func (n *Node) localEndpoints() []netip.AddrPort {
	la := n.ep.LocalAddr()
	var ifaces []netip.Addr
	if la.Addr().IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if pfx, err := netip.ParsePrefix(a.String()); err == nil {
					ifaces = append(ifaces, pfx.Addr())
				}
			}
		}
	}
	return endpointList(la, ifaces, n.extraEndpoints())
}

// endpointList builds localEndpoints from the socket's address la, the interface addresses (used
// when la is unspecified) and the extra endpoints to list first; without duplicates, at most
// control.MaxEndpoints-1 (the coord adds the address it sees). The coord drops overlay addresses.
func endpointList(la netip.AddrPort, ifaces []netip.Addr, extra []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(extra)+len(ifaces)+1)
	add := func(ap netip.AddrPort) {
		if len(out) < control.MaxEndpoints-1 && !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	for _, ap := range extra {
		add(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	if !la.Addr().IsUnspecified() {
		add(la)
		return out
	}
	for _, a := range ifaces {
		ip := a.Unmap()
		if ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		add(netip.AddrPortFrom(ip, la.Port()))
	}
	return out
}

// MaxAdvertise bounds Config.Advertise.
const MaxAdvertise = 8

// CheckAdvertise reports whether ap may be advertised as an endpoint (Config.Advertise): a literal
// IP address and port that a peer could send to: not loopback, unspecified, multicast, link-local or
// the limited broadcast address, and without a zone. Whether it lies inside the overlay is checked
// once the node knows the overlay's prefixes, at the first login (Start).
func CheckAdvertise(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	switch {
	case !ap.IsValid() || ap.Port() == 0:
		return fmt.Errorf("--advertise %s: want a literal IP:PORT with a port 1-65535", ap)
	case a.Zone() != "":
		return fmt.Errorf("--advertise %s: an address with a zone is not reachable from other hosts", ap)
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("--advertise %s: a loopback, unspecified, multicast, link-local or broadcast address is not reachable from other hosts", ap)
	}
	return nil
}

// Close stops the node: API, proxy, control connection, peer links, TUN device, netstack, in that order (users
// first, so nothing new starts while the data plane goes away). Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	if n.api != nil {
		n.api.close()
	}
	if n.metricsSrv != nil {
		n.metricsSrv.Close()
	}
	if n.proxy != nil {
		n.proxy.close()
	}
	if n.coord != nil {
		n.logoutOnClose()
		n.coord.close()
	}
	n.closePortmap()
	if n.ep != nil {
		n.ep.Close()
	}
	n.sendq.close() // after the links: no Send is left blocking
	n.relays.close()
	n.streamRelays.Close() // and waits for them; none new since closed was set: acceptStream checks it
	n.wg.Wait()
	n.closeTUN()
	if s := n.stack.Load(); s != nil {
		s.Close()
	}
	return nil
}
