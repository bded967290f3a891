// Package netstack is a node's userspace TCP/IP stack (gVisor) with one point-to-point NIC that holds
// the node's overlay addresses. Outbound IP packets leave through a callback; inbound ones enter
// through Inject. It dials TCP and UDP on the overlay for local clients, answers ICMP echo, and forwards
// inbound TCP connections to exposed ports on to 127.0.0.1; every other inbound connection gets a RST.
//
// It knows nothing about QUIC, peers, the coord or SOCKS: the node wires it to them.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/warren-net/warren/relay"
)

const nicID = 1

// Config configures a Stack.
type Config struct {
	// Addrs are the node's own overlay addresses (an IPv4 and an IPv6) with the overlay's prefix
	// length, e.g. 100.64.0.1/10: the prefix makes its last address a broadcast address. Required.
	Addrs []netip.Prefix
	// Routes are the prefixes sent out of the NIC. Default: everything (0.0.0.0/0 and ::/0).
	Routes []netip.Prefix
	// MTU of the link; every packet passed to Output fits it. At least 1280 (IPv6's minimum). Default 1280.
	MTU int
	// Output is called for every outbound IP packet, synchronously from the stack's write path. pkt is
	// valid only during the call. It must not block for long. Required.
	Output func(pkt []byte)
	// Exposed reports whether inbound connections to a local port are forwarded ("tcp"). nil = none.
	Exposed func(proto string, port uint16) bool
	// DialLocal reaches exposed services on the host. Default: a net.Dialer to 127.0.0.1:PORT.
	DialLocal func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger; nil = silent.
	Logger hclog.Logger
}

// Stats are the stack's packet counters.
type Stats struct {
	PacketsIn, PacketsOut, DroppedMalformed, ForwardsRefused, ForwardsActive atomic.Uint64
}

// Stack is a running userspace network stack. Its methods are safe for concurrent use.
type Stack struct {
	cfg   Config
	log   hclog.Logger
	s     *stack.Stack
	link  *link
	stats Stats
	ctx   context.Context // alive until Close
	stop  context.CancelFunc
	wg    sync.WaitGroup

	// mu guards the following.
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // both ends of every forwarded connection
	groups map[netip.Addr]bool   // multicast groups joined
	closed bool
}

// Forwarding limits: SYNs being dialed to localhost at once, and the TCP buffer range.
const (
	maxInFlightForwards = 512
	tcpBufMax           = 8 << 20
	tcpBufDefault       = 1 << 20
	localDialTimeout    = 5 * time.Second
)

// New builds and starts a Stack.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Addrs) == 0 || cfg.Output == nil {
		return nil, errors.New("netstack: Addrs and Output are required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1280
	}
	if cfg.MTU < 1280 || cfg.MTU > maxPacket {
		// gVisor disables IPv6 on links below its minimum MTU of 1280.
		return nil, fmt.Errorf("netstack: MTU %d out of range", cfg.MTU)
	}
	if cfg.Exposed == nil {
		cfg.Exposed = func(string, uint16) bool { return false }
	}
	if cfg.DialLocal == nil {
		cfg.DialLocal = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ns := &Stack{cfg: cfg, log: cfg.Logger, conns: make(map[net.Conn]struct{}), groups: make(map[netip.Addr]bool)}
	ns.ctx, ns.stop = context.WithCancel(context.Background())
	ns.link = &link{output: cfg.Output, stats: &ns.stats}
	ns.link.mtu.Store(uint32(cfg.MTU))

	ns.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	if err := ns.tune(); err != nil {
		ns.s.Close()
		return nil, err
	}
	if err := ns.s.CreateNIC(nicID, ns.link); err != nil {
		ns.s.Close()
		return nil, fmt.Errorf("netstack: create NIC: %s", err)
	}
	for _, a := range cfg.Addrs {
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		if a.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(a.Addr().AsSlice()), PrefixLen: a.Bits()}}
		if err := ns.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			ns.s.Close()
			return nil, fmt.Errorf("netstack: add address %v: %s", a, err)
		}
	}
	routes := cfg.Routes
	if len(routes) == 0 {
		routes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	var table []tcpip.Route
	for _, p := range routes {
		sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(p.Masked().Addr().AsSlice()), tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
		if err != nil {
			ns.s.Close()
			return nil, fmt.Errorf("netstack: route %v: %v", p, err)
		}
		table = append(table, tcpip.Route{Destination: sub, NIC: nicID})
	}
	ns.s.SetRouteTable(table)

	fwd := tcp.NewForwarder(ns.s, 0, maxInFlightForwards, ns.forwardTCP)
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	return ns, nil
}

// tune sets TCP options. SACK recovers from datagram loss without resending whole windows; buffers up
// to 8 MiB with receive-buffer moderation let one flow fill a fast link at overlay RTTs.
func (ns *Stack) tune() error {
	opts := []tcpip.SettableTransportProtocolOption{
		func() *tcpip.TCPSACKEnabled { v := tcpip.TCPSACKEnabled(true); return &v }(),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpBufDefault, Max: tcpBufMax},
		func() *tcpip.TCPModerateReceiveBufferOption {
			v := tcpip.TCPModerateReceiveBufferOption(true)
			return &v
		}(),
	}
	for _, o := range opts {
		if err := ns.s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("netstack: TCP option %T: %s", o, err)
		}
	}
	return nil
}

// Inject delivers one inbound IP packet. pkt is copied. Malformed packets are dropped and counted.
func (ns *Stack) Inject(pkt []byte) {
	if len(pkt) == 0 || len(pkt) > maxPacket {
		ns.stats.DroppedMalformed.Add(1)
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
		proto = ipv4.ProtocolNumber
	case 6:
		proto = ipv6.ProtocolNumber
	default:
		ns.stats.DroppedMalformed.Add(1)
		return
	}
	if dst, ok := multicastDst(pkt); ok {
		ns.joinGroup(proto, dst)
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	if ns.link.deliver(proto, pb) {
		ns.stats.PacketsIn.Add(1)
	}
	pb.DecRef()
}

// maxGroups bounds the multicast groups the stack joins on behalf of peers.
const maxGroups = 256

// multicastDst returns the destination of an IPv4 or IPv6 packet if it is a multicast address.
func multicastDst(pkt []byte) (netip.Addr, bool) {
	var dst netip.Addr
	switch {
	case pkt[0]>>4 == 4 && len(pkt) >= 20:
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	case pkt[0]>>4 == 6 && len(pkt) >= 40:
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

// DialContext opens a connection on the overlay. network is "tcp", "tcp4", "tcp6", "udp", "udp4" or
// "udp6"; address is a literal "ip:port". A refused TCP connection returns an error containing
// "connection refused".
func (ns *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("address %q: want a literal ip:port", address)}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	fa := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := gonet.DialContextTCP(ctx, ns.s, fa, proto)
		if err != nil {
			return nil, dialError(network, address, err)
		}
		return c, nil
	case "udp", "udp4", "udp6":
		c, err := gonet.DialUDP(ns.s, nil, &fa, proto)
		if err != nil {
			return nil, dialError(network, address, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("netstack: unsupported network %q", network)
}

// dialError turns gVisor's error text into the words the rest of the system matches on.
func dialError(network, address string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection was refused"):
		err = errors.New("connection refused")
	case strings.Contains(msg, "no route to host"), strings.Contains(msg, "host is unreachable"):
		err = errors.New("host unreachable")
	case strings.Contains(msg, "network is unreachable"):
		err = errors.New("network is unreachable")
	}
	return &net.OpError{Op: "dial", Net: network, Addr: stringAddr(address), Err: err}
}

type stringAddr string

func (a stringAddr) Network() string { return "overlay" }
func (a stringAddr) String() string  { return string(a) }

// forwardTCP handles a new inbound connection (a SYN to one of our addresses): exposed ports are
// dialed on the host and spliced; everything else is reset.
func (ns *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	port := id.LocalPort
	if !ns.cfg.Exposed("tcp", port) {
		ns.stats.ForwardsRefused.Add(1)
		r.Complete(true)
		return
	}
	ctx, cancel := context.WithTimeout(ns.ctx, localDialTimeout)
	local, err := ns.cfg.DialLocal(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	cancel()
	if err != nil {
		ns.log.Debug("exposed port not answering on localhost", "port", port, "error", err)
		ns.stats.ForwardsRefused.Add(1)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		local.Close()
		r.Complete(true)
		return
	}
	r.Complete(false)
	remote := gonet.NewTCPConn(&wq, ep)
	if !ns.track(remote, local) {
		remote.Close()
		local.Close()
		return
	}
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		defer ns.untrack(remote, local)
		ns.stats.ForwardsActive.Add(1)
		relay.Copy(remote, nil, local)
		ns.stats.ForwardsActive.Add(^uint64(0))
	}()
}

func (ns *Stack) track(cs ...net.Conn) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return false
	}
	for _, c := range cs {
		ns.conns[c] = struct{}{}
	}
	return true
}

func (ns *Stack) untrack(cs ...net.Conn) {
	ns.mu.Lock()
	for _, c := range cs {
		delete(ns.conns, c)
	}
	ns.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Stats returns the stack's counters.
func (ns *Stack) Stats() *Stats { return &ns.stats }

// Close closes forwarded connections, stops the stack and waits for its goroutines. Idempotent.
func (ns *Stack) Close() error {
	ns.mu.Lock()
	if ns.closed {
		ns.mu.Unlock()
		return nil
	}
	ns.closed = true
	for c := range ns.conns {
		c.Close()
	}
	ns.mu.Unlock()
	ns.stop()
	ns.wg.Wait()
	ns.s.Close()
	ns.s.Wait()
	return nil
}
