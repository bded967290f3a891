// Package netstack is a node's userspace TCP/IP stack (gVisor) with one point-to-point, header-less
// NIC (like a TUN device) that holds the node's overlay addresses. Outbound IP packets leave through a
// callback (Config.Output); inbound ones enter through Inject (or Gather and Flush, which coalesce a
// batch's TCP segments). On top of that it
//   - dials TCP and UDP on the overlay for local clients (DialContext, ListenUDP),
//   - answers ICMP echo to its own addresses and sends pings (Ping),
//   - forwards inbound TCP connections to exposed ports on to 127.0.0.1 and resets every other one
//     (the remote side sees "connection refused" at once), and forwards exposed UDP ports (ExposeUDP),
//     each connection and datagram only if Config.Admit lets it in.
//
// It does not route: packets for addresses other than its own are dropped, never forwarded. It knows
// nothing about QUIC, peers, the coord or SOCKS, and does not check who sent a packet: the node
// wires it to the peer links and does the anti-spoofing checks before Inject.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/warren-net/warren/internal/bicopy"
)

const nicID = 1

// Link MTU limits and default.
const (
	// DefaultMTU is the MTU when Config.MTU is 0: the overlay's MTU, which every peer link can carry
	// in one QUIC datagram from its first packet on.
	DefaultMTU = 1280
	// minMTU4 is the smallest MTU accepted for an IPv4-only stack (RFC 791's 576). IPv6 needs 1280:
	// gVisor refuses to send IPv6 at all on a smaller link (calculateNetworkMTU fails).
	minMTU4 = 576
	// maxPacket is the largest IP packet the stack accepts or builds.
	maxPacket = 65535
)

// Config configures a Stack. Fields are read once by New; changing them later has no effect.
type Config struct {
	// Addrs are the node's own overlay addresses (an IPv4 and an IPv6) with the overlay's prefix
	// length, e.g. 100.64.0.1/10 and fd7a:7761:7272::1/48: the prefix makes the last IPv4 address of
	// the overlay a (subnet) broadcast address that exposed UDP ports receive. A /32 or /128 is a
	// plain host address. Required.
	Addrs []netip.Prefix
	// Routes are the destination prefixes sent out of the NIC. Destinations outside them fail with
	// "host unreachable". Default: everything (0.0.0.0/0 and ::/0).
	Routes []netip.Prefix
	// MTU of the link: no packet passed to Output is larger. Default DefaultMTU (1280). At least 1280
	// if Addrs holds an IPv6 address (gVisor disables IPv6 below that), else at least 576.
	MTU int
	// Output is called for every outbound IP packet (IPv4 or IPv6, no link header), synchronously
	// from the stack's write path, possibly from many goroutines at once. pkt is valid only during
	// the call (its buffer is reused). It must not block for long and must not call Inject
	// synchronously. Required.
	Output func(pkt []byte)
	// Exposed reports whether inbound connections to a local port are forwarded to the host; proto
	// is "tcp" (ExposeUDP handles UDP). Called once per inbound SYN. nil: nothing is exposed.
	Exposed func(proto string, port uint16) bool
	// Admit reports whether an inbound connection or datagram from remote (the sender's address
	// and port) to an exposed local port may be forwarded; proto is "tcp" or "udp". It is asked
	// after gVisor has reassembled and parsed the packet, so IP fragments or long IPv6 header
	// chains cannot hide what is being opened: once per inbound SYN to an exposed TCP port, before
	// the local dial (refused: a RST), and once per datagram to an exposed UDP port (refused:
	// dropped). It runs on the forwarding goroutines, possibly many at once, and must not block.
	// nil: everything exposed is admitted.
	Admit func(proto string, remote netip.AddrPort, localPort uint16) bool
	// DialLocal reaches exposed services on the host, with addr "127.0.0.1:PORT"; its ctx carries the
	// overlay flow it serves (FlowOf). nil: a net.Dialer.
	DialLocal func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialEgress, if set, makes this an egress stack (egress.go): instead of holding Addrs, its NIC
	// takes packets to any address and answers from any (promiscuous and spoofing), and every TCP
	// connection and UDP flow a client opens, to any destination, is dialed with DialEgress (addr
	// "IP:PORT", the destination the client asked for) and spliced to it. Exposed, Admit, DialLocal,
	// Addrs and ExposeUDP are not used then, nor DialContext, ListenUDP and Ping. A failed dial resets
	// the TCP connection or ends the UDP flow.
	DialEgress func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives the stack's logs; per-packet lines only at trace level. nil: silent.
	Logger hclog.Logger
}

// Stats is a snapshot of a Stack's counters (see Stack.Stats).
type Stats struct {
	PacketsIn        uint64 // packets Inject handed to the stack
	BytesIn          uint64 // their bytes
	PacketsOut       uint64 // packets passed to Output
	BytesOut         uint64 // their bytes
	DroppedMalformed uint64 // inbound: empty, over 65535 bytes, not IPv4/IPv6, or malformed per gVisor's IP layer
	DroppedOversize  uint64 // outbound packets over the MTU, not passed to Output (a bug if not 0)
	DroppedClosed    uint64 // packets injected after Close
	ForwardsAccepted uint64 // inbound TCP connections spliced to an exposed port
	ForwardsRefused  uint64 // inbound TCP connections reset (unexposed, not admitted, local dial failed), UDP datagrams refused (not admitted, no flow)
	ForwardsActive   uint64 // spliced TCP connections open now
	EgressUDPFlows   uint64 // egress UDP flows open now (egress stacks only)
}

// counters are the live counters behind Stats.
type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut          atomic.Uint64
	malformed, oversize, closed                       atomic.Uint64
	forwardsAccepted, forwardsRefused, forwardsActive atomic.Uint64
	egressUDPFlows                                    atomic.Int64
}

// Stack is a running userspace network stack. Its methods are safe for concurrent use.
type Stack struct {
	// Fixed at New.
	cfg   Config
	log   hclog.Logger
	s     *stack.Stack
	link  *link
	gro   coalescer
	stats counters
	ctx   context.Context // alive until Close; cancels local dials
	stop  context.CancelFunc
	wg    sync.WaitGroup // every goroutine the Stack started (forwarder handlers, UDP flows) but relays
	// relays are the forwarded connections' relays (splices): Close closes them (a relay direction
	// parked in bicopy's epoll set would not see its socket closed directly) and waits for them.
	relays bicopy.Group

	// mu guards the following. wg.Add happens only under mu while !closed, so Close's wg.Wait
	// never races with a new goroutine.
	mu     sync.Mutex
	conns  map[io.Closer]struct{} // exposed UDP listeners, egress flows' sockets
	groups map[netip.Addr]bool    // multicast groups joined
	// handshakes counts inbound connections per remote address that are not spliced yet (local
	// dial, then the handshake, which a remote that never answers our SYN-ACK keeps open for
	// about two minutes).
	handshakes map[netip.Addr]int
	closed     bool
}

// Forwarding limits and TCP buffers.
const (
	// maxInFlightForwards bounds inbound SYNs whose local dial is in progress; more are dropped
	// (the peer retransmits the SYN), so a SYN flood cannot pile up goroutines.
	maxInFlightForwards = 256
	// maxHandshakesFrom is one remote address's share of them, so that one peer leaving SYNs
	// half-open cannot keep every other peer out.
	maxHandshakesFrom = maxInFlightForwards / 8
	// tcpRcvWnd is the forwarder's initial receive window (0 = gVisor's default).
	tcpRcvWnd = 0
	// TCP buffer range. gVisor grows the send buffer with the congestion window and, with
	// moderation on, the receive buffer with the measured delivery rate, both up to tcpBufMax. The
	// overlay RTT (QUIC over the internet, maybe via a relay) is tens to hundreds of ms, so the max
	// allows a bandwidth-delay product of 8 MiB (e.g. ~200 Mbit/s at 300 ms), above gVisor's 4 MiB
	// default; the small default keeps idle and slow connections cheap.
	tcpBufMin     = 4 << 10
	tcpBufDefault = 256 << 10
	tcpBufMax     = 8 << 20
)

// New builds and starts a Stack.
func New(cfg Config) (*Stack, error) {
	if err := populate(&cfg); err != nil {
		return nil, err
	}
	ns := &Stack{cfg: cfg, log: cfg.Logger, conns: make(map[io.Closer]struct{}), groups: make(map[netip.Addr]bool),
		handshakes: make(map[netip.Addr]int)}
	ns.ctx, ns.stop = context.WithCancel(context.Background())
	ns.link = newLink(uint32(cfg.MTU), cfg.Output, &ns.stats, ns.log)
	ns.gro.init(ns.link, &ns.stats)

	ns.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// HandleLocal: a dial to our own address loops back inside the stack instead of leaving. An
		// egress stack has no address of its own: everything it sends leaves.
		HandleLocal: cfg.DialEgress == nil,
	})
	if err := ns.setup(); err != nil {
		ns.stop()
		ns.s.Close()
		ns.s.Wait()
		return nil, err
	}
	return ns, nil
}

// populate validates cfg and fills in defaults.
func populate(cfg *Config) error {
	if cfg.DialEgress != nil {
		cfg.Addrs = nil // see Config.DialEgress
		if cfg.MTU == 0 {
			cfg.MTU = DefaultMTU
		}
		if cfg.MTU < header.IPv6MinimumMTU || cfg.MTU > maxPacket {
			return fmt.Errorf("netstack: MTU %d out of range [%d, %d]", cfg.MTU, header.IPv6MinimumMTU, maxPacket)
		}
	} else if len(cfg.Addrs) == 0 {
		return errors.New("netstack: Config.Addrs is required")
	}
	if cfg.Output == nil {
		return errors.New("netstack: Config.Output is required")
	}
	minMTU := minMTU4
	for _, a := range cfg.Addrs {
		if !a.IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "" {
			return fmt.Errorf("netstack: invalid address %v", a)
		}
		if a.Addr().Is6() {
			minMTU = header.IPv6MinimumMTU
		}
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.DialEgress == nil && (cfg.MTU < minMTU || cfg.MTU > maxPacket) {
		return fmt.Errorf("netstack: MTU %d out of range [%d, %d]", cfg.MTU, minMTU, maxPacket)
	}
	if len(cfg.Routes) == 0 {
		cfg.Routes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if cfg.Exposed == nil {
		cfg.Exposed = func(string, uint16) bool { return false }
	}
	if cfg.Admit == nil {
		cfg.Admit = func(string, netip.AddrPort, uint16) bool { return true }
	}
	if cfg.DialLocal == nil {
		cfg.DialLocal = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return nil
}

// setup tunes TCP, creates the NIC with its addresses and routes, and installs the TCP forwarder.
func (ns *Stack) setup() error {
	if err := ns.tune(); err != nil {
		return err
	}
	if err := ns.s.CreateNIC(nicID, ns.link); err != nil {
		return fmt.Errorf("netstack: create NIC: %v", tcpErr(err))
	}
	for _, a := range ns.cfg.Addrs {
		pa := tcpip.ProtocolAddress{Protocol: netProto(a.Addr()), AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(a.Addr().AsSlice()), PrefixLen: a.Bits()}}
		if err := ns.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %v: %v", a, tcpErr(err))
		}
	}
	var table []tcpip.Route
	for _, p := range ns.cfg.Routes {
		if !p.IsValid() {
			return fmt.Errorf("netstack: invalid route %v", p)
		}
		p = p.Masked()
		sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(p.Addr().AsSlice()), tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
		if err != nil {
			return fmt.Errorf("netstack: route %v: %v", p, err)
		}
		table = append(table, tcpip.Route{Destination: sub, NIC: nicID})
	}
	ns.s.SetRouteTable(table)

	if ns.cfg.DialEgress != nil {
		return ns.setupEgress()
	}
	fwd := tcp.NewForwarder(ns.s, tcpRcvWnd, maxInFlightForwards, ns.forwardTCP)
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	return nil
}

// tune sets TCP options. Every overlay packet is an unreliable QUIC datagram, so loss is normal, and
// SACK stays off: in this gVisor a retransmission timeout during SACK recovery empties the scoreboard
// while the receiver's next ACKs put the sender straight back into recovery with every segment it
// has not heard of since counted in flight (seen on the packet path: cwnd 5, ssthresh 2, 87
// segments "outstanding"), so it sends nothing until the next timeout, two segments per 200 ms for
// tens of seconds; one bulk run in four to six hit it (bench row warren-packet, stop 28). Without
// SACK (NewReno: gVisor's RACK needs SACK) 16 runs of 16 ran clean, as fast or faster. gVisor's Outstanding accounting with
// SACK is a known open bug (google/gvisor#14092: SACKed-then-acked segments leak into Outstanding);
// SACK can come back with a gVisor that fixes it. Buffers auto-tune between tcpBufMin and
// tcpBufMax (see there), so one flow is not window-limited at overlay RTTs while idle connections
// stay small. Congestion control stays gVisor's default (reno): cubic gains little at these windows,
// and the link's QUIC congestion control already paces the datagrams underneath.
func (ns *Stack) tune() error {
	sack := tcpip.TCPSACKEnabled(false)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	opts := []tcpip.SettableTransportProtocolOption{
		&sack,
		&moderate,
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
	}
	for _, o := range opts {
		if err := ns.s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("netstack: TCP option %T: %v", o, tcpErr(err))
		}
	}
	return nil
}

// netProto returns the gVisor network protocol of an address.
func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// Inject delivers one inbound IP packet (IPv4 or IPv6, told apart by the version nibble) from the
// overlay. pkt is copied; the caller may reuse it at once. Malformed packets are dropped and
// counted. Inject never blocks on the network and is safe to call after Close (the packet is dropped).
func (ns *Stack) Inject(pkt []byte) { ns.inject(pkt, false) }

// inject is Inject, or Gather if gather is set.
func (ns *Stack) inject(pkt []byte, gather bool) {
	if len(pkt) == 0 || len(pkt) > maxPacket {
		ns.dropMalformed(pkt, "bad length")
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
		proto = ipv4.ProtocolNumber
	case 6:
		proto = ipv6.ProtocolNumber
	default:
		ns.dropMalformed(pkt, "bad IP version")
		return
	}
	if dst, ok := multicastDst(pkt); ok {
		ns.joinGroup(proto, dst)
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	defer pb.DecRef()
	if gather {
		ns.gather(proto, pb)
	} else if !ns.link.deliver(proto, pb) {
		ns.stats.closed.Add(1)
		return
	}
	ns.stats.packetsIn.Add(1)
	ns.stats.bytesIn.Add(uint64(len(pkt)))
}

func (ns *Stack) dropMalformed(pkt []byte, why string) {
	ns.stats.malformed.Add(1)
	if ns.log.IsTrace() {
		ns.log.Trace("drop inbound packet", "reason", why, "len", len(pkt))
	}
}

// maxGroups bounds the multicast groups the stack joins on behalf of peers.
const maxGroups = 256

// multicastDst returns the destination of an IPv4 or IPv6 packet if it is a multicast address.
func multicastDst(pkt []byte) (netip.Addr, bool) {
	var dst netip.Addr
	switch {
	case pkt[0]>>4 == 4 && len(pkt) >= header.IPv4MinimumSize:
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	case pkt[0]>>4 == 6 && len(pkt) >= header.IPv6MinimumSize:
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	}
	return dst, dst.IsMulticast()
}

// joinGroup makes the NIC accept a multicast group the first time a peer sends to it, so that
// datagrams to a LAN game's discovery group reach exposed UDP ports (which listen on every address)
// without anyone on this node joining it explicitly.
func (ns *Stack) joinGroup(proto tcpip.NetworkProtocolNumber, group netip.Addr) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.groups[group] || len(ns.groups) >= maxGroups || ns.closed {
		return
	}
	if err := ns.s.JoinGroup(proto, nicID, tcpip.AddrFromSlice(group.AsSlice())); err == nil {
		ns.groups[group] = true
	}
}

// Stats returns a snapshot of the stack's counters. Each counter is read atomically; the snapshot
// as a whole is not (counters may move between reads).
func (ns *Stack) Stats() Stats {
	c := &ns.stats
	return Stats{
		PacketsIn:        c.packetsIn.Load(),
		BytesIn:          c.bytesIn.Load(),
		PacketsOut:       c.packetsOut.Load(),
		BytesOut:         c.bytesOut.Load(),
		DroppedMalformed: c.malformed.Load() + ns.s.Stats().IP.MalformedPacketsReceived.Value(),
		DroppedOversize:  c.oversize.Load(),
		DroppedClosed:    c.closed.Load(),
		ForwardsAccepted: c.forwardsAccepted.Load(),
		ForwardsRefused:  c.forwardsRefused.Load(),
		ForwardsActive:   c.forwardsActive.Load(),
		EgressUDPFlows:   uint64(max(c.egressUDPFlows.Load(), 0)),
	}
}

// goTracked runs f in a goroutine counted in wg, after registering conns so that Close closes
// them. It reports false, and runs nothing, if the stack is closed.
func (ns *Stack) goTracked(f func(), conns ...io.Closer) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return false
	}
	for _, c := range conns {
		ns.conns[c] = struct{}{}
	}
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		f()
	}()
	return true
}

// untrack forgets and closes conns.
func (ns *Stack) untrack(conns ...io.Closer) {
	ns.mu.Lock()
	for _, c := range conns {
		delete(ns.conns, c)
	}
	ns.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// abortEvery is how often Close aborts the stack's endpoints while it waits for its goroutines.
const abortEvery = 50 * time.Millisecond

// waitAborting waits for the stack's goroutines. A forwarder goroutine in the middle of a handshake
// (CreateEndpoint) would wait until the remote completes it or gVisor gives up, after ~2 min of
// SYN-ACK retries; aborting the endpoints, as gVisor's Stack.Close does first, ends it at once. The
// abort repeats until all are done: a local dial that succeeds meanwhile starts one more handshake.
func (ns *Stack) waitAborting() {
	done := make(chan struct{})
	go func() {
		ns.wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(abortEvery)
	defer tick.Stop()
	for {
		for _, ep := range ns.s.RegisteredEndpoints() {
			ep.Abort()
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// errClosedStack is returned by methods called after Close.
var errClosedStack = fmt.Errorf("netstack: %w", net.ErrClosed)

// Close closes forwarded connections and exposed UDP ports, stops the goroutines the stack started
// and waits for them, then closes the gVisor stack (which ends connections made with DialContext).
// It is idempotent and always returns nil.
func (ns *Stack) Close() error {
	ns.mu.Lock()
	if ns.closed {
		ns.mu.Unlock()
		return nil
	}
	// 1. No new goroutines from here on (goTracked and the forwarder check closed).
	ns.closed = true
	conns := make([]io.Closer, 0, len(ns.conns))
	for c := range ns.conns {
		conns = append(conns, c)
	}
	ns.mu.Unlock()
	// 2. Closing every relay and socket ends every splice and UDP listener; cancelling ctx aborts
	// local dials; aborting the endpoints ends handshakes in progress. Closing a relay closes its
	// host socket and its endpoint, which wakes its directions: relays.Close waits for them here,
	// and no splice starts from here on.
	ns.relays.Close()
	for _, c := range conns {
		c.Close()
	}
	ns.stop()
	ns.waitAborting()
	// 3. Only then the stack: its endpoints close, its protocol goroutines stop.
	ns.s.Close()
	ns.s.Wait()
	return nil
}
