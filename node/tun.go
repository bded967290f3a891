package node

// TUN mode (Config.TUN, `warren up --tun`): a kernel TUN device carries the overlay for apps that
// cannot use the proxy. Packets the kernel routes into the device go to output, exactly like the
// netstack's (routing by destination, broadcast fan-out). Packets from peers that pass the same
// checks as receive (source address belongs to the sending peer, broadcast rate limit) go through a
// small stateful filter, because the kernel would otherwise accept anything a peer sends:
//
//   - TCP: a SYN only to an exposed TCP port; any other segment only for a flow this node opened or
//     accepted (its 5-tuple was seen leaving the device). Refused segments are answered with a RST,
//     as the netstack answers an unexposed port.
//   - UDP: to an exposed UDP port (unicast, broadcast or multicast), or as a reply to a flow this node
//     opened; replies to a broadcast or multicast this node sent are accepted from any peer.
//   - ICMP and ICMPv6: echo requests and replies; errors only if the packet they quote belongs to a
//     tracked flow. Everything else (NDP, MLD, other protocols) is dropped.
//   - Non-first fragments pass (without their first fragment the kernel cannot reassemble them).
//
// Flows live in a bounded table with idle expiry (flowTable). Outbound, only packets from the node's
// own overlay addresses leave the device, and only UDP may fan out.
//
// The netstack keeps running beside the device, and the proxy keeps using it: proxied TCP to a peer
// takes the stream path (no netstack, no device), proxied UDP, --packet-path TCP and `warren ping` use
// the netstack. Both own the same addresses, so the flow table also records which side opened each
// flow and delivers replies there; packets of no tracked flow (new inbound connections, pings from
// peers) go to the kernel. Exposed ports are therefore served by the kernel on the device's address:
// a service must listen on the overlay address or a wildcard address, not only on 127.0.0.1 (the
// stream path still dials 127.0.0.1, which a wildcard listener also serves).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/tun"
)

// tunBridge joins the TUN device to the node.
type tunBridge struct {
	dev          *tun.Device
	flows        *flowTable
	self4, self6 netip.Addr

	dropFiltered atomic.Uint64 // inbound packets the filter refused
	dropOutbound atomic.Uint64 // packets from the device that may not leave (foreign source, non-UDP fan-out)
}

// receiveFunc is the peer endpoint's Receive callback for the configured mode.
func (n *Node) receiveFunc() func(peer.Key, []byte) {
	if n.cfg.TUN != "" {
		return n.receiveTUN
	}
	return n.receive
}

// outputFunc is the netstack's Output callback for the configured mode.
func (n *Node) outputFunc() func([]byte) {
	if n.cfg.TUN != "" {
		return n.outputStack
	}
	return n.output
}

// startTUN creates the device once the node knows its addresses. A no-op unless Config.TUN is set.
func (n *Node) startTUN(w *control.Welcome) error {
	if n.cfg.TUN == "" {
		return nil
	}
	b := &tunBridge{flows: newFlowTable(maxFlows), self4: w.IPv4, self6: w.IPv6}
	dev, err := tun.Open(tun.Config{
		Name:    n.cfg.TUN,
		Addrs:   []netip.Prefix{netip.PrefixFrom(w.IPv4, w.Prefix4.Bits()), netip.PrefixFrom(w.IPv6, w.Prefix6.Bits())},
		MTU:     peer.MaxPacketSize,
		Receive: func(pkt []byte) { n.outputTUN(b, pkt) },
		Logger:  n.log.Named("tun"),
	})
	if errors.Is(err, tun.ErrPermission) {
		return fmt.Errorf("--tun needs root or CAP_NET_ADMIN: %w", err)
	}
	if err != nil {
		return fmt.Errorf("--tun: %w", err)
	}
	b.dev = dev
	n.tun.Store(b)
	return nil
}

// closeTUN deletes the device (and its addresses and routes).
func (n *Node) closeTUN() {
	if b := n.tun.Swap(nil); b != nil && b.dev != nil {
		if err := b.dev.Close(); err != nil {
			n.log.Warn("closing the TUN device", "error", err)
		}
	}
}

// outputTUN sends a packet the kernel routed into the device.
func (n *Node) outputTUN(b *tunBridge, pkt []byte) {
	p, ok := parsePacket(pkt)
	if !ok || (p.src != b.self4 && p.src != b.self6) {
		// Link-local and unspecified sources (router solicitations, MLD) and anything malformed.
		b.dropOutbound.Add(1)
		return
	}
	fanOut := n.isFanOut(p.dst)
	if fanOut && (p.proto != protoUDP || p.fragment) {
		b.dropOutbound.Add(1)
		return
	}
	if k, ok := p.outboundFlow(fanOut); ok {
		b.flows.track(k, ownerTUN)
	}
	n.output(pkt)
}

// outputStack sends a packet of the netstack's in TUN mode, noting its flow so replies go back to it.
func (n *Node) outputStack(pkt []byte) {
	if b := n.tun.Load(); b != nil {
		if p, ok := parsePacket(pkt); ok {
			if k, ok := p.outboundFlow(n.isFanOut(p.dst)); ok {
				b.flows.track(k, ownerStack)
			}
		}
	}
	n.output(pkt)
}

// receiveTUN is receive for TUN mode: the same admission checks, then the filter decides between
// the device, the netstack and the bin.
func (n *Node) receiveTUN(from peer.Key, pkt []byte) {
	if !n.admit(from, pkt) {
		return
	}
	b := n.tun.Load()
	if b == nil {
		return // not up yet, or closing
	}
	p, ok := parsePacket(pkt)
	if !ok {
		b.dropFiltered.Add(1)
		return
	}
	v := n.tunVerdict(b, &p)
	if v != 0 && !n.filterACL(n.routes.Load(), from, pkt) {
		return
	}
	switch v {
	case ownerTUN:
		b.dev.Write(pkt) // a full or closed device drops, as a NIC would
	case ownerStack:
		if s := n.stack.Load(); s != nil {
			s.Inject(pkt)
		}
	default:
		b.dropFiltered.Add(1)
		if n.log.IsTrace() {
			n.log.Trace("filtered inbound packet", "from", from, "src", p.src, "dst", p.dst, "proto", p.proto, "port", p.dport)
		}
		if rst := tcpReset(&p, pkt); rst != nil {
			n.send(from, rst, false)
		}
	}
}

// admit repeats receive's checks: the source must be one of the sending peer's addresses, and
// broadcast and multicast are rate-limited per sender.
func (n *Node) admit(from peer.Key, pkt []byte) bool {
	src, dst, ok := addrs(pkt)
	if !ok {
		n.dropSpoofed.Add(1)
		return false
	}
	if owner, ok := n.routes.Load().owner[src]; !ok || owner != from {
		n.dropSpoofed.Add(1)
		return false
	}
	if n.isFanOut(dst) && !n.limits.allow(from) {
		n.dropRateLimited.Add(1)
		return false
	}
	return true
}

// tunVerdict applies the filter of the file comment: ownerTUN, ownerStack or 0 (drop).
func (n *Node) tunVerdict(b *tunBridge, p *packet) uint8 {
	toSelf := p.dst == b.self4 || p.dst == b.self6
	fanOut := !toSelf && n.isFanOut(p.dst)
	if !toSelf && !fanOut {
		return 0
	}
	if p.fragment {
		return ownerTUN
	}
	switch p.proto {
	case protoTCP:
		if !toSelf {
			return 0
		}
		if o, ok := b.flows.lookup(p.inboundFlow()); ok {
			return o
		}
		if p.tcpFlags&(tcpSYN|tcpACK|tcpRST) == tcpSYN && n.exposed[Port{"tcp", p.dport}] {
			return ownerTUN
		}
	case protoUDP:
		if o, ok := b.flows.lookup(p.inboundFlow()); ok && toSelf {
			return o
		}
		if o, ok := b.flows.lookup(p.wildcardFlow()); ok && toSelf {
			return o // a reply to our broadcast or multicast
		}
		if n.exposed[Port{"udp", p.dport}] {
			return ownerTUN
		}
	case protoICMP, protoICMPv6:
		if !toSelf {
			return 0
		}
		switch {
		case p.icmpEcho && p.icmpReply:
			if o, ok := b.flows.lookup(p.inboundFlow()); ok {
				return o
			}
			return ownerTUN
		case p.icmpEcho:
			return ownerTUN // the kernel answers
		case p.icmpError:
			inner, ok := parsePacket(p.icmpQuote)
			if !ok || (inner.src != b.self4 && inner.src != b.self6) {
				return 0
			}
			if k, ok := inner.outboundFlow(false); ok {
				if o, ok := b.flows.lookup(k); ok {
					return o
				}
			}
		}
	}
	return 0
}

// IP protocol numbers and TCP flags.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// packet is what the filter needs to know about an IP packet.
type packet struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16 // for ICMP echo: the identifier in sport and dport alike
	tcpFlags     uint8
	fragment     bool // a non-first fragment: no transport header
	transport    []byte

	icmpEcho, icmpReply, icmpError bool
	icmpQuote                      []byte // the packet an ICMP error quotes
}

// parsePacket reads an IPv4 or IPv6 packet's addresses, protocol and ports. It accepts packets cut
// after the first 4 transport bytes (as ICMP errors quote them); flags need the full TCP header.
func parsePacket(pkt []byte) (p packet, ok bool) {
	if len(pkt) < 1 {
		return p, false
	}
	var off int
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return p, false
		}
		off = int(pkt[0]&0x0f) * 4
		if off < 20 || off > len(pkt) {
			return p, false
		}
		p.src, p.dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		p.proto = pkt[9]
		p.fragment = binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0
	case 6:
		if len(pkt) < 40 {
			return p, false
		}
		p.src, p.dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		next, o, found := pkt[6], 40, false
	walk:
		for range 8 { // extension headers, bounded
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(pkt) < o+2 {
					return p, false
				}
				next, o = pkt[o], o+(int(pkt[o+1])+1)*8
				continue
			case 44: // fragment
				if len(pkt) < o+8 {
					return p, false
				}
				p.fragment = binary.BigEndian.Uint16(pkt[o+2:])>>3 != 0
				next, o = pkt[o], o+8
				continue
			}
			found = true
			break walk
		}
		if !found || o > len(pkt) {
			return p, false
		}
		p.proto, off = next, o
	default:
		return p, false
	}
	if p.fragment {
		return p, true
	}
	t := pkt[off:]
	p.transport = t
	switch p.proto {
	case protoTCP, protoUDP:
		if len(t) < 4 {
			return p, false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(t[0:]), binary.BigEndian.Uint16(t[2:])
		if p.proto == protoTCP && len(t) >= 14 {
			p.tcpFlags = t[13]
		}
	case protoICMP, protoICMPv6:
		if len(t) < 8 {
			return p, false
		}
		typ := t[0]
		if p.proto == protoICMP {
			p.icmpEcho, p.icmpReply = typ == 8 || typ == 0, typ == 0
			p.icmpError = typ == 3 || typ == 11 || typ == 12
		} else {
			p.icmpEcho, p.icmpReply = typ == 128 || typ == 129, typ == 129
			p.icmpError = typ >= 1 && typ <= 4
		}
		if p.icmpEcho {
			p.sport = binary.BigEndian.Uint16(t[4:])
			p.dport = p.sport
		}
		if p.icmpError {
			p.icmpQuote = t[8:]
		}
	}
	return p, true
}

// flowKey is one flow as seen from this node: local and remote address and port. ICMP echo flows
// use the identifier as the local port; a zero remote stands for "any peer" (replies to a broadcast).
type flowKey struct {
	proto         uint8
	local, remote netip.Addr
	lport, rport  uint16
}

// outboundFlow is the flow a packet leaving this node opens or continues. ICMP echo replies (we
// answer, we do not ask) and RSTs open nothing.
func (p *packet) outboundFlow(fanOut bool) (flowKey, bool) {
	switch {
	case p.fragment:
		return flowKey{}, false
	case p.proto == protoTCP:
		if p.tcpFlags&tcpRST != 0 {
			return flowKey{}, false
		}
		return flowKey{proto: p.proto, local: p.src, remote: p.dst, lport: p.sport, rport: p.dport}, true
	case p.proto == protoUDP:
		if fanOut {
			return flowKey{proto: p.proto, local: p.src, lport: p.sport}, true
		}
		return flowKey{proto: p.proto, local: p.src, remote: p.dst, lport: p.sport, rport: p.dport}, true
	case p.icmpEcho && !p.icmpReply:
		return flowKey{proto: p.proto, local: p.src, remote: p.dst, lport: p.sport}, true
	}
	return flowKey{}, false
}

// inboundFlow is the flow an arriving packet would belong to.
func (p *packet) inboundFlow() flowKey {
	if p.proto == protoICMP || p.proto == protoICMPv6 {
		return flowKey{proto: p.proto, local: p.dst, remote: p.src, lport: p.dport}
	}
	return flowKey{proto: p.proto, local: p.dst, remote: p.src, lport: p.dport, rport: p.sport}
}

// wildcardFlow is the "any peer" flow an arriving UDP reply to a broadcast would belong to.
func (p *packet) wildcardFlow() flowKey {
	return flowKey{proto: p.proto, local: p.dst, lport: p.dport}
}

// Flow owners: who opened a flow, and so who gets its replies.
const (
	ownerTUN   uint8 = 1
	ownerStack uint8 = 2
)

// Flow table limits: entries, and idle times after which a flow is forgotten (TCP as RFC 5382's NAT
// minimum, UDP a bit over RFC 4787's two minutes).
const (
	maxFlows     = 65536
	idleTCP      = 2*time.Hour + 4*time.Minute
	idleUDP      = 3 * time.Minute
	idleICMP     = 30 * time.Second
	sweepEvery   = 30 * time.Second
	flowsPerScan = 4096 // entries looked at per eviction scan when the table is full
)

// flowTable remembers recent flows and their owners. Bounded: when full, expired flows go first, then
// arbitrary ones (a lost flow only costs its connection). Safe for concurrent use.
type flowTable struct {
	max   int
	start time.Time // seen times are offsets from it (monotonic)

	// mu guards the following.
	mu        sync.Mutex
	m         map[flowKey]flowState
	lastSweep time.Duration
}

type flowState struct {
	owner uint8
	seen  time.Duration
}

func newFlowTable(max int) *flowTable {
	return &flowTable{max: max, start: time.Now(), m: make(map[flowKey]flowState)}
}

func idleFor(proto uint8) time.Duration {
	switch proto {
	case protoTCP:
		return idleTCP
	case protoUDP:
		return idleUDP
	}
	return idleICMP
}

// track records (or refreshes) flow k as owned by owner.
func (t *flowTable) track(k flowKey, owner uint8) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[k]; !ok {
		if now-t.lastSweep > sweepEvery {
			t.sweepLocked(now, len(t.m))
		}
		if len(t.m) >= t.max {
			t.sweepLocked(now, flowsPerScan)
		}
		if len(t.m) >= t.max {
			for old := range t.m { // map order is arbitrary: evict one
				delete(t.m, old)
				break
			}
		}
	}
	t.m[k] = flowState{owner: owner, seen: now}
}

// lookup returns k's owner and refreshes it, if k is known and not expired.
func (t *flowTable) lookup(k flowKey) (uint8, bool) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[k]
	if !ok {
		return 0, false
	}
	if now-f.seen > idleFor(k.proto) {
		delete(t.m, k)
		return 0, false
	}
	f.seen = now
	t.m[k] = f
	return f.owner, true
}

// sweepLocked deletes expired flows among at most limit entries.
func (t *flowTable) sweepLocked(now time.Duration, limit int) {
	t.lastSweep = now
	for k, f := range t.m {
		if limit--; limit < 0 {
			return
		}
		if now-f.seen > idleFor(k.proto) {
			delete(t.m, k)
		}
	}
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// tcpReset builds the RST that refuses TCP segment p (pkt), as RFC 9293 prescribes for a closed
// port, or returns nil if p is no TCP segment to this node, or is itself a RST.
func tcpReset(p *packet, pkt []byte) []byte {
	if p.proto != protoTCP || p.fragment || len(p.transport) < 20 || p.tcpFlags&tcpRST != 0 || p.dst.IsMulticast() {
		return nil
	}
	t := p.transport
	doff := int(t[12]>>4) * 4
	if doff < 20 || doff > len(t) {
		return nil
	}
	seq, ack := binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[8:])
	var rseq, rack uint32
	flags := byte(tcpRST)
	if p.tcpFlags&tcpACK != 0 {
		rseq = ack
	} else {
		segLen := uint32(len(t) - doff)
		if p.tcpFlags&tcpSYN != 0 {
			segLen++
		}
		if p.tcpFlags&tcpFIN != 0 {
			segLen++
		}
		rack = seq + segLen
		flags |= tcpACK
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], p.dport)
	binary.BigEndian.PutUint16(tcp[2:], p.sport)
	binary.BigEndian.PutUint32(tcp[4:], rseq)
	binary.BigEndian.PutUint32(tcp[8:], rack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	var out []byte
	if p.src.Is4() {
		ip := make([]byte, 20, 40)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 40)
		ip[8] = 64
		ip[9] = protoTCP
		d, s := p.dst.As4(), p.src.As4()
		copy(ip[12:], d[:])
		copy(ip[16:], s[:])
		binary.BigEndian.PutUint16(ip[10:], ^checksum(0, ip))
		pseudo := append(append(d[:], s[:]...), 0, protoTCP, 0, 20)
		binary.BigEndian.PutUint16(tcp[16:], ^checksum(checksum(0, pseudo), tcp))
		out = append(ip, tcp...)
	} else {
		ip := make([]byte, 40, 60)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6] = protoTCP
		ip[7] = 64
		d, s := p.dst.As16(), p.src.As16()
		copy(ip[8:], d[:])
		copy(ip[24:], s[:])
		pseudo := append(append(d[:], s[:]...), 0, 0, 0, 20, 0, 0, 0, protoTCP)
		binary.BigEndian.PutUint16(tcp[16:], ^checksum(checksum(0, pseudo), tcp))
		out = append(ip, tcp...)
	}
	return out
}

// checksum adds b to the ones' complement sum sum (RFC 1071), folded to 16 bits.
func checksum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
