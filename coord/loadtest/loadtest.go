// Package loadtest drives coordination servers with many simulated nodes: real identity keys and the
// real control protocol over QUIC, but no netstack and no peer links. It measures what a server does
// at scale: how fast nodes log in and join, how long an event on one node takes to reach its peers,
// how many control bytes that costs each peer, and what the server process spends in memory and CPU.
//
// It knows the servers only through the control protocol, as a node does: it must not import the
// coord's store, relay or operator packages.
package loadtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// Config says what to simulate.
type Config struct {
	// Coords are the servers' addresses (HOST:PORT, optionally #SHA256:… to pin the key); node i
	// logs in to Coords[i % len(Coords)]. A server's key is checked only where it is pinned.
	Coords []string
	// Nodes is how many nodes to simulate.
	Nodes int
	// NetworksOf is how many members each network has (the last one may have fewer). Default 10.
	NetworksOf int
	// Events is how many endpoint changes to make, each on a random node, whose arrival at the
	// node's peers is timed. Default 200.
	Events int
	// EventRate is how many of those events are made per second. Default 50.
	EventRate float64
	// Churn is how many nodes per second drop their connection and log in again during the churn
	// phase, which lasts ChurnFor (default 10 s). 0 = no churn phase.
	Churn    float64
	ChurnFor time.Duration
	// Idle, if set, ends the run with every node connected and idle this long, and reports what
	// each local coord spent on CPU to keep them so (ServerStats.IdleCPUMicros).
	Idle time.Duration
	// Concurrency bounds the logins and requests in flight. Default 128 (the coord admits 1024
	// handshaking connections at once).
	Concurrency int
	// Sockets is how many UDP sockets the nodes share. Default 32.
	Sockets int
	// Timeout bounds each phase. Default 2 minutes.
	Timeout time.Duration
	// Password, if set, protects the networks: every join then pays the server's password hash
	// (argon2id), as real joins with a password do. Without it the networks are open.
	Password string
	// Log reports progress; nil = silent.
	Log hclog.Logger
}

// Result is the figures of one run, printed as one JSON line by `warren-coord loadtest`.
type Result struct {
	Nodes    int `json:"nodes"`
	Networks int `json:"networks"`
	Coords   int `json:"coords"`
	// LoginSeconds is the time until every node had logged in (Welcome and peer map read).
	LoginSeconds float64 `json:"login_seconds"`
	LoginsPerSec float64 `json:"logins_per_s"`
	// JoinSeconds is the time until every network was created and joined by all its members.
	JoinSeconds float64 `json:"join_seconds"`
	// Fan-out: from a node's endpoint update until each of its peers read the delta that carries it.
	FanoutEvents  int     `json:"fanout_events"`
	FanoutSamples int     `json:"fanout_samples"`
	FanoutMissed  int     `json:"fanout_missed"`
	FanoutP50Ms   float64 `json:"fanout_p50_ms"`
	FanoutP99Ms   float64 `json:"fanout_p99_ms"`
	FanoutMaxMs   float64 `json:"fanout_max_ms"`
	// BytesPerPeerEvent is the control bytes one peer received per event during the fan-out phase.
	BytesPerPeerEvent float64 `json:"bytes_per_peer_per_event"`
	// Churn phase: nodes that dropped and logged in again, and how long the new login took.
	ChurnLogins   int     `json:"churn_logins,omitempty"`
	ChurnFailures int     `json:"churn_failures,omitempty"`
	ChurnP50Ms    float64 `json:"churn_login_p50_ms,omitempty"`
	ChurnP99Ms    float64 `json:"churn_login_p99_ms,omitempty"`
	// LoginFailures counts logins and requests that failed and were retried.
	Retries int `json:"retries"`
	// Servers are the coords' processes as seen from /proc where they run on this machine.
	Servers []ServerStats `json:"servers,omitempty"`
}

// ServerStats is one coord process's resource use at the end of the run.
type ServerStats struct {
	Addr       string  `json:"addr"`
	PID        int     `json:"pid"`
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// IdleCPUMicros is the coord's CPU time per node it serves per second during the idle phase,
	// in µs (Config.Idle; absent without it).
	IdleCPUMicros float64 `json:"idle_cpu_us_per_node_s,omitempty"`
}

// markerBase is where the endpoints of timed events come from: 198.18.0.0/15 (benchmarking, RFC
// 2544), never a real peer's address. Event i is 198.18.0.0 + i, port markerPort.
var markerBase = netip.MustParseAddr("198.18.0.0")

const (
	markerPort = 40000
	maxEvents  = 1 << 17 // the size of 198.18.0.0/15
	// MaxNodes bounds Config.Nodes: each simulated node holds a QUIC connection.
	MaxNodes = 100000
)

func markerFor(i int) netip.AddrPort {
	b := markerBase.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), markerPort)
}

func eventOf(ap netip.AddrPort) (int, bool) {
	if ap.Port() != markerPort || !ap.Addr().Is4() {
		return 0, false
	}
	b, base := ap.Addr().As4(), markerBase.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	w := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	if v < w || v-w >= maxEvents {
		return 0, false
	}
	return int(v - w), true
}

func (c *Config) defaults() error {
	if len(c.Coords) == 0 {
		return errors.New("no coordination server given")
	}
	if c.Nodes < 2 || c.Nodes > MaxNodes {
		return fmt.Errorf("nodes: %d, want 2 to %d", c.Nodes, MaxNodes)
	}
	if c.NetworksOf == 0 {
		c.NetworksOf = 10
	}
	if c.NetworksOf < 2 || c.NetworksOf > control.MaxPeers {
		return fmt.Errorf("networks-of: %d, want 2 to %d", c.NetworksOf, control.MaxPeers)
	}
	if c.Events == 0 {
		c.Events = 200
	}
	if c.Events < 0 || c.Events > maxEvents {
		return fmt.Errorf("events: %d, want 0 to %d", c.Events, maxEvents)
	}
	if c.EventRate <= 0 {
		c.EventRate = 50
	}
	if c.Churn < 0 {
		return fmt.Errorf("churn: %v, want 0 or more per second", c.Churn)
	}
	if c.ChurnFor <= 0 {
		c.ChurnFor = 10 * time.Second
	}
	if c.Idle < 0 {
		return fmt.Errorf("idle: %v, want 0 or more", c.Idle)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 128
	}
	if c.Sockets <= 0 {
		c.Sockets = 32
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
	return nil
}

// server is one coordination server the nodes log in to.
type server struct {
	addr string // as given, without the pin
	ap   netip.AddrPort
	pin  string // fingerprint, "" = any key
}

// simNode is one simulated node: a key, a control connection and a reader that records events.
type simNode struct {
	idx     int
	key     *identity.Key
	name    string
	network string
	creator bool
	srv     *server
	tr      *quic.Transport

	mu      sync.Mutex // guards conn, stream and writes to stream
	conn    *quic.Conn
	stream  *quic.Stream
	replies chan *control.Reply // one request in flight at a time
	gen     int                 // connection generation, so an old reader's end is not the new one's
}

// run is one load test in progress.
type run struct {
	cfg     Config
	servers []*server
	nodes   []*simNode
	peers   [][]int // network index → member node indexes
	netOf   []int   // node index → network index
	quic    *quic.Config

	bytes   atomic.Int64 // control bytes read by all nodes
	retries atomic.Int64

	evMu    sync.Mutex
	evSent  []time.Time     // event → when its update was sent (zero: not yet)
	evSeen  []map[int]bool  // event → receivers that saw it
	samples []time.Duration // one per (event, receiver)
	evNode  []int           // event → node it was made on
	_       [0]func()       // not comparable
}

// Run simulates cfg.Nodes nodes against the servers until every phase is done or ctx ends, logs
// them out, and returns the figures.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	// What a real node with these servers uses (control.Timers), so that the coord carries a real
	// node's keep-alive load.
	idle, keepAlive := control.Timers(len(cfg.Coords))
	r := &run{cfg: cfg, quic: &quic.Config{
		HandshakeIdleTimeout: 10 * time.Second,
		MaxIdleTimeout:       idle,
		KeepAlivePeriod:      keepAlive,
	}}
	for _, a := range cfg.Coords {
		s, err := parseServer(ctx, a)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, s)
	}
	transports, err := openTransports(cfg.Sockets)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, tr := range transports {
			tr.Close()
		}
	}()
	if err := r.makeNodes(transports); err != nil {
		return nil, err
	}
	defer r.logoutAll()

	res := &Result{Nodes: cfg.Nodes, Networks: len(r.peers), Coords: len(r.servers)}
	cfg.Log.Info("logging in", "nodes", cfg.Nodes, "coords", len(r.servers))
	start := time.Now()
	if err := r.each(ctx, r.nodes, func(ctx context.Context, n *simNode) error { return r.login(ctx, n) }); err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	res.LoginSeconds = round(time.Since(start).Seconds())
	res.LoginsPerSec = round(float64(cfg.Nodes) / time.Since(start).Seconds())
	cfg.Log.Info("logged in", "seconds", round(res.LoginSeconds))

	start = time.Now()
	var creators, members []*simNode
	for _, n := range r.nodes {
		if n.creator {
			creators = append(creators, n)
		} else {
			members = append(members, n)
		}
	}
	if err := r.each(ctx, creators, func(ctx context.Context, n *simNode) error {
		return r.request(ctx, n, control.Request{Op: control.OpCreate, Network: n.network, Password: cfg.Password, Open: cfg.Password == ""})
	}); err != nil {
		return nil, fmt.Errorf("create networks: %w", err)
	}
	if err := r.each(ctx, members, func(ctx context.Context, n *simNode) error {
		return r.request(ctx, n, control.Request{Op: control.OpJoin, Network: n.network, Password: cfg.Password})
	}); err != nil {
		return nil, fmt.Errorf("join networks: %w", err)
	}
	res.JoinSeconds = round(time.Since(start).Seconds())
	cfg.Log.Info("networks joined", "networks", len(r.peers), "seconds", round(res.JoinSeconds))

	if err := r.fanout(ctx, res); err != nil {
		return nil, err
	}
	if cfg.Churn > 0 {
		if err := r.churn(ctx, res); err != nil {
			return nil, err
		}
	}
	idleCPU, err := r.idle(ctx)
	if err != nil {
		return nil, err
	}
	res.Retries = int(r.retries.Load())
	for i, s := range r.servers {
		if st, ok := processStats(s.ap); ok {
			st.Addr = s.addr
			st.IdleCPUMicros = idleCPU[i]
			res.Servers = append(res.Servers, st)
		}
	}
	return res, nil
}

// idle holds every node connected and idle for cfg.Idle (keep-alives only) and returns, per
// server, its CPU time per node it serves per second in µs (0 where it is not a local process).
func (r *run) idle(ctx context.Context) ([]float64, error) {
	out := make([]float64, len(r.servers))
	if r.cfg.Idle <= 0 {
		return out, nil
	}
	r.cfg.Log.Info("idling", "for", r.cfg.Idle)
	before := make([]ServerStats, len(r.servers))
	for i, s := range r.servers {
		before[i], _ = processStats(s.ap)
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(r.cfg.Idle):
	}
	secs := time.Since(start).Seconds()
	for i, s := range r.servers {
		after, ok := processStats(s.ap)
		if !ok || before[i].PID == 0 {
			continue
		}
		// Node j logs in to server j % len(servers).
		served := r.cfg.Nodes / len(r.servers)
		if i < r.cfg.Nodes%len(r.servers) {
			served++
		}
		out[i] = round((after.CPUSeconds - before[i].CPUSeconds) / secs / float64(served) * 1e6)
	}
	r.cfg.Log.Info("idled", "coord_cpu_us_per_node_s", out)
	return out, nil
}

func parseServer(ctx context.Context, a string) (*server, error) {
	addr, pin, err := identity.SplitPinnedAddr(a)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("coordination server %q: %w", addr, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("resolve coordination server %q: %w", host, err)
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, fmt.Errorf("coordination server port %q: %w", port, err)
	}
	return &server{addr: addr, ap: netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), pin: pin}, nil
}

func openTransports(n int) ([]*quic.Transport, error) {
	var trs []*quic.Transport
	for range n {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			for _, tr := range trs {
				tr.Close()
			}
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		trs = append(trs, &quic.Transport{Conn: c})
	}
	return trs, nil
}

// makeNodes generates the nodes' keys and places them in networks of cfg.NetworksOf.
func (r *run) makeNodes(trs []*quic.Transport) error {
	runID := randomHex(3)
	r.nodes = make([]*simNode, r.cfg.Nodes)
	r.netOf = make([]int, r.cfg.Nodes)
	for i := range r.nodes {
		k, err := identity.Generate()
		if err != nil {
			return err
		}
		g := i / r.cfg.NetworksOf
		if g == len(r.peers) {
			r.peers = append(r.peers, nil)
		}
		r.peers[g] = append(r.peers[g], i)
		r.netOf[i] = g
		r.nodes[i] = &simNode{
			idx: i, key: k, name: fmt.Sprintf("lt%s-%d", runID, i), network: fmt.Sprintf("lt%s-%d", runID, g),
			creator: i%r.cfg.NetworksOf == 0, srv: r.servers[i%len(r.servers)], tr: trs[i%len(trs)],
			replies: make(chan *control.Reply, 1),
		}
	}
	// A last network of one member would have no peer to time events with: fold it into the one before.
	if last := r.peers[len(r.peers)-1]; len(last) == 1 && len(r.peers) > 1 {
		i := last[0]
		r.peers = r.peers[:len(r.peers)-1]
		g := len(r.peers) - 1
		r.peers[g] = append(r.peers[g], i)
		r.netOf[i] = g
		r.nodes[i].network, r.nodes[i].creator = r.nodes[r.peers[g][0]].network, false
	}
	return nil
}

// each runs f for every node, cfg.Concurrency at a time, retrying a failed call with back-off
// until the phase's timeout; the first error that outlives its retries ends the phase.
func (r *run) each(ctx context.Context, nodes []*simNode, f func(context.Context, *simNode) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	work := make(chan *simNode)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, len(nodes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := r.retry(ctx, n, f); err != nil {
					select {
					case errc <- fmt.Errorf("node %s: %w", n.name, err):
					default:
					}
					cancel()
				}
			}
		}()
	}
feed:
	for _, n := range nodes {
		select {
		case work <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}

func (r *run) retry(ctx context.Context, n *simNode, f func(context.Context, *simNode) error) error {
	wait := 100 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := f(attempt, n)
		cancel()
		if err == nil {
			return nil
		}
		var ce *control.Error
		if errors.As(err, &ce) && ce.Code != control.CodeInternal && ce.Code != control.CodeRateLimited {
			return err // a refusal that a retry would only repeat
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
		r.retries.Add(1)
		select {
		case <-time.After(wait/2 + time.Duration(mrand.Int64N(int64(wait)))):
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
		wait = min(2*wait, 3*time.Second)
	}
}

// login connects n to its server and reads the Welcome and the first peer map; a reader goroutine
// then takes every later message until the connection ends.
func (r *run) login(ctx context.Context, n *simNode) error {
	n.mu.Lock()
	if n.conn != nil {
		n.conn.CloseWithError(0, "")
		n.conn, n.stream = nil, nil
	}
	n.mu.Unlock()
	tlsConf, err := identity.TLSConfig(n.key, control.ALPN, false, func(pub ed25519.PublicKey) error {
		if n.srv.pin != "" && identity.Fingerprint(pub) != n.srv.pin {
			return fmt.Errorf("coordination server %s presented %s, pinned %s", n.srv.addr, identity.Fingerprint(pub), n.srv.pin)
		}
		return nil
	})
	if err != nil {
		return err
	}
	conn, err := n.tr.Dial(ctx, net.UDPAddrFromAddrPort(n.srv.ap), tlsConf, r.quic)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", n.srv.addr, err)
	}
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		conn.CloseWithError(0, "")
		return fmt.Errorf("open control stream: %w", err)
	}
	cr := &countingReader{r: stream, n: &r.bytes}
	login := &control.Login{Version: control.Version, Name: n.name, Ephemeral: true}
	if err := control.WriteMsg(stream, &control.Msg{Type: control.TypeLogin, Login: login}); err != nil {
		conn.CloseWithError(0, "")
		return fmt.Errorf("send login: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		stream.SetReadDeadline(dl)
	}
	m, err := control.ReadMsg(cr)
	if err == nil && m.Type == control.TypeReply {
		err = m.Reply.Err()
	} else if err == nil && m.Type != control.TypeWelcome {
		err = fmt.Errorf("login: unexpected %q", m.Type)
	}
	if err == nil {
		var pm *control.Msg
		if pm, err = control.ReadMsg(cr); err == nil && pm.Type == control.TypePeerMap {
			_, err = control.ReadPeerMap(cr, pm.PeerMap)
		} else if err == nil {
			err = fmt.Errorf("login: expected a peer map, got %q", pm.Type)
		}
	}
	if err != nil {
		conn.CloseWithError(0, "")
		return fmt.Errorf("login: %w", err)
	}
	stream.SetReadDeadline(time.Time{})
	n.mu.Lock()
	n.conn, n.stream = conn, stream
	n.gen++
	gen := n.gen
	n.mu.Unlock()
	go r.read(n, cr, gen)
	return nil
}

// read takes n's messages until its connection ends: replies go to the waiting request, deltas
// are searched for timed events.
func (r *run) read(n *simNode, cr *countingReader, gen int) {
	for {
		m, err := control.ReadMsg(cr)
		if err != nil {
			n.mu.Lock()
			if n.gen == gen {
				n.conn, n.stream = nil, nil
			}
			n.mu.Unlock()
			return
		}
		switch m.Type {
		case control.TypeReply:
			select {
			case n.replies <- m.Reply:
			default: // nobody waits: a reply to a request that timed out
			}
		case control.TypePeerMap:
			if _, err := control.ReadPeerMap(cr, m.PeerMap); err != nil {
				n.mu.Lock()
				if n.conn != nil && n.gen == gen {
					n.conn.CloseWithError(0, "")
				}
				n.mu.Unlock()
				return
			}
		case control.TypePeerDelta:
			now := time.Now()
			for _, p := range m.PeerDelta.Upsert {
				for _, ep := range p.Endpoints {
					if ev, ok := eventOf(ep); ok {
						r.seen(ev, n.idx, now)
					}
				}
			}
		}
	}
}

// request sends q for n and waits for its reply.
func (r *run) request(ctx context.Context, n *simNode, q control.Request) error {
	n.mu.Lock()
	stream := n.stream
	if stream == nil {
		n.mu.Unlock()
		if err := r.login(ctx, n); err != nil {
			return err
		}
		n.mu.Lock()
		stream = n.stream
	}
	select { // a late reply of an earlier, timed-out request
	case <-n.replies:
	default:
	}
	err := control.WriteMsg(stream, &control.Msg{Type: control.TypeRequest, Request: &q})
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("send %s: %w", q.Op, err)
	}
	select {
	case rep := <-n.replies:
		return rep.Err()
	case <-ctx.Done():
		return fmt.Errorf("%s: no reply: %w", q.Op, ctx.Err())
	}
}

// fanout makes cfg.Events endpoint changes, each on another random node, at cfg.EventRate, and times
// their arrival at every peer of that node.
func (r *run) fanout(ctx context.Context, res *Result) error {
	e := r.cfg.Events
	r.evSent, r.evSeen, r.evNode = make([]time.Time, e), make([]map[int]bool, e), make([]int, e)
	expected := 0
	// Events go to the nodes in a random order without repeats (until every node had one): the
	// coord may fold two quick updates of one node into one delta, which is not a lost event.
	order := mrand.Perm(len(r.nodes))
	for i := range e {
		r.evNode[i] = order[i%len(order)]
		r.evSeen[i] = map[int]bool{}
		expected += len(r.peers[r.netOf[r.evNode[i]]]) - 1
	}
	r.cfg.Log.Info("timing fan-out", "events", e, "per_second", r.cfg.EventRate)
	before := r.bytes.Load()
	tick := time.NewTicker(time.Duration(float64(time.Second) / r.cfg.EventRate))
	defer tick.Stop()
	for i := range e {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		n := r.nodes[r.evNode[i]]
		n.mu.Lock()
		if n.stream != nil {
			r.evMu.Lock()
			r.evSent[i] = time.Now()
			r.evMu.Unlock()
			control.WriteMsg(n.stream, &control.Msg{Type: control.TypeEndpoints, Endpoints: &control.Endpoints{Endpoints: []netip.AddrPort{markerFor(i)}}})
		}
		n.mu.Unlock()
	}
	// Wait until every peer saw every event, or 10 s after the last one: what is missing then is
	// counted as missed, not waited for.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.evMu.Lock()
		got := len(r.samples)
		r.evMu.Unlock()
		if got >= expected {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.evMu.Lock()
	defer r.evMu.Unlock()
	res.FanoutEvents, res.FanoutSamples, res.FanoutMissed = e, len(r.samples), expected-len(r.samples)
	res.FanoutP50Ms, res.FanoutP99Ms, res.FanoutMaxMs = percentileMs(r.samples, 0.50), percentileMs(r.samples, 0.99), percentileMs(r.samples, 1)
	if len(r.samples) > 0 {
		res.BytesPerPeerEvent = math.Round(float64(r.bytes.Load()-before) / float64(len(r.samples)))
	}
	r.cfg.Log.Info("fan-out timed", "samples", len(r.samples), "missed", res.FanoutMissed, "p50_ms", res.FanoutP50Ms, "p99_ms", res.FanoutP99Ms)
	return nil
}

// seen records that receiver read event ev at t (the first time only).
func (r *run) seen(ev, receiver int, t time.Time) {
	r.evMu.Lock()
	defer r.evMu.Unlock()
	if ev >= len(r.evSent) || r.evSent[ev].IsZero() || r.evSeen[ev][receiver] || r.netOf[receiver] != r.netOf[r.evNode[ev]] {
		return
	}
	r.evSeen[ev][receiver] = true
	r.samples = append(r.samples, t.Sub(r.evSent[ev]))
}

// churn drops cfg.Churn random nodes a second for cfg.ChurnFor and logs each in again at once.
func (r *run) churn(ctx context.Context, res *Result) error {
	r.cfg.Log.Info("churning", "per_second", r.cfg.Churn, "for", r.cfg.ChurnFor)
	var (
		mu      sync.Mutex
		times   []time.Duration
		fails   int
		wg      sync.WaitGroup
		busy    = make([]atomic.Bool, len(r.nodes))
		slots   = make(chan struct{}, r.cfg.Concurrency)
		end     = time.Now().Add(r.cfg.ChurnFor)
		tick    = time.NewTicker(time.Duration(float64(time.Second) / r.cfg.Churn))
		cctx, c = context.WithTimeout(ctx, r.cfg.ChurnFor+r.cfg.Timeout)
	)
	defer c()
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		i := mrand.IntN(len(r.nodes))
		if !busy[i].CompareAndSwap(false, true) {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			busy[i].Store(false)
			continue // as many relogins in flight as allowed: skip this tick
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; busy[i].Store(false); wg.Done() }()
			n := r.nodes[i]
			start := time.Now()
			err := r.retry(cctx, n, func(ctx context.Context, n *simNode) error { return r.login(ctx, n) })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
				return
			}
			times = append(times, time.Since(start))
		}()
	}
	wg.Wait()
	res.ChurnLogins, res.ChurnFailures = len(times), fails
	res.ChurnP50Ms, res.ChurnP99Ms = percentileMs(times, 0.5), percentileMs(times, 0.99)
	r.cfg.Log.Info("churned", "logins", len(times), "failures", fails, "p50_ms", res.ChurnP50Ms, "p99_ms", res.ChurnP99Ms)
	return nil
}

// logoutAll logs every node out (they are ephemeral: the coord removes them) and closes them.
func (r *run) logoutAll() {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	work := make(chan *simNode)
	for range min(r.cfg.Concurrency, len(r.nodes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				n.mu.Lock()
				connected := n.stream != nil
				n.mu.Unlock()
				if connected {
					rctx, c := context.WithTimeout(ctx, 5*time.Second)
					r.request(rctx, n, control.Request{Op: control.OpLogout})
					c()
				}
				n.mu.Lock()
				if n.conn != nil {
					n.conn.CloseWithError(0, "load test over")
				}
				n.conn, n.stream = nil, nil
				n.mu.Unlock()
			}
		}()
	}
	for _, n := range r.nodes {
		work <- n
	}
	close(work)
	wg.Wait()
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// percentileMs returns the q-quantile of d in milliseconds (nearest rank), 0 for none.
func percentileMs(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return round(float64(s[i]) / float64(time.Millisecond))
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
