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
// Flows live in a bounded table with idle expiry (packet.FlowTable). Outbound, only packets from the node's
// own overlay addresses leave the device, and only UDP may fan out. TCP the device opens to a peer
// does not leave as packets: the device's own stack ends it and carries it on the stream path
// (devstack.go); the peer's filter never sees it, the peer's acceptStream does.
//
// The netstack keeps running beside the device, and the proxy keeps using it: proxied TCP to a peer
// takes the stream path (no netstack, no device), proxied UDP, --packet-path TCP and `warren ping` use
// the netstack. Both own the same addresses, so the flow table also records which side opened each
// flow and delivers replies there; packets of no tracked flow (new inbound connections, pings from
// peers) go to the kernel, with one exception: a new flow to an exposed port whose service listens
// only on 127.0.0.1 goes to the netstack, which forwards it there as in proxy mode (listens.go). A
// peer's stream is dialed on this host, on the device's address if the service listens there, else
// on 127.0.0.1 (exposedAddr). Packets the device sends to the node's DNS addresses
// never leave: the node answers them (dns.go).

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/tun"
)

// tunBridge joins the TUN device, and the devices of `warren run` (attach.go), to the node.
type tunBridge struct {
	dev          *tun.Device
	devs         [256]atomic.Pointer[tun.Device]     // by flow owner: dev at ownerTUN, attached ones from ownerAttached
	stacks       [256]atomic.Pointer[netstack.Stack] // each device's own stack (devstack.go), by owner
	flows        *packet.FlowTable                   // owners: ownerTUN or ownerStack
	self4, self6 netip.Addr
	dns4, dns6   netip.Addr // the node's DNS server (dns.go)
	// loopbackOnly reports whether an exposed port's service listens only on loopback (--tun only;
	// listens.go): then the netstack, not the kernel, takes the new flow and forwards it there.
	loopbackOnly func(proto uint8, dst netip.Addr, port uint16) bool

	dropFiltered atomic.Uint64 // inbound packets the filter refused
	dropOutbound atomic.Uint64 // packets from the device that may not leave (foreign source, non-UDP fan-out)
}

// Flow owners: who opened a flow, and so who gets its replies.
const (
	ownerTUN   uint8 = 1
	ownerStack uint8 = 2
	// ownerAttached and up: devices of `warren run` (attach.go).
	ownerAttached uint8 = 3
)

// maxFlows bounds the flow table.
const maxFlows = 65536

// newBridge makes a bridge for the node's addresses a4 and a6, with their overlay prefix lengths.
func newBridge(a4, a6 netip.Prefix) *tunBridge {
	b := &tunBridge{flows: packet.NewFlowTable(maxFlows), self4: a4.Addr(), self6: a6.Addr()}
	b.dns4, b.dns6 = dnsAddrs(a4, a6)
	return b
}

// receiveFunc is the peer endpoint's Receive callback for the configured mode.
func (n *Node) receiveFunc() func(peer.Key, []byte) {
	if n.cfg.TUN != "" {
		return n.receiveTUN
	}
	return n.receiveAttached
}

// outputFunc is the netstack's Output callback for the configured mode.
func (n *Node) outputFunc() func([]byte) {
	return n.outputStack // without a bridge (no --tun, no `warren run`), just output
}

// startTUN creates the device once the node knows its addresses. A no-op unless Config.TUN is set.
func (n *Node) startTUN(w *control.Welcome) error {
	if n.cfg.TUN == "" {
		return nil
	}
	b := newBridge(netip.PrefixFrom(w.IPv4, w.Prefix4.Bits()), netip.PrefixFrom(w.IPv6, w.Prefix6.Bits()))
	dev, err := tun.Open(tun.Config{
		Name:         n.cfg.TUN,
		Addrs:        []netip.Prefix{netip.PrefixFrom(w.IPv4, w.Prefix4.Bits()), netip.PrefixFrom(w.IPv6, w.Prefix6.Bits())},
		MTU:          peer.MaxPacketSize,
		Receive:      func(pkt []byte) { n.outputTUN(b, ownerTUN, pkt) },
		ReceiveLarge: func(pkt []byte) bool { return n.outputTUNLarge(b, ownerTUN, pkt) },
		Logger:       n.log.Named("tun"),
	})
	if errors.Is(err, tun.ErrPermission) {
		return fmt.Errorf("--tun needs root or CAP_NET_ADMIN: %w", err)
	}
	if err != nil {
		return fmt.Errorf("--tun: %w", err)
	}
	s, err := n.newDeviceStack(dev, ownerTUN, dev.Name())
	if err != nil {
		dev.Close()
		return err
	}
	b.dev = dev
	b.loopbackOnly = n.listens.loopbackOnly
	b.stacks[ownerTUN].Store(s)
	b.devs[ownerTUN].Store(dev)
	n.tun.Store(b)
	n.registerDNS(dev.Name(), b.dns4, b.dns6)
	return nil
}

// closeTUN deletes the device (and its addresses and routes).
func (n *Node) closeTUN() {
	n.attached.close()
	n.unregisterDNS()
	if b := n.tun.Swap(nil); b != nil && b.dev != nil {
		if s := b.stacks[ownerTUN].Swap(nil); s != nil {
			s.Close()
		}
		if err := b.dev.Close(); err != nil {
			n.log.Warn("closing the TUN device", "error", err)
		}
	}
}

// outputTUN sends a packet the kernel routed into the device of owner (ownerTUN, or an attached one).
func (n *Node) outputTUN(b *tunBridge, owner uint8, pkt []byte) {
	p, ok := packet.Parse(pkt)
	if !ok || (p.Src != b.self4 && p.Src != b.self6) {
		// Link-local and unspecified sources (router solicitations, MLD) and anything malformed.
		b.dropOutbound.Add(1)
		return
	}
	if p.Dst == b.dns4 || p.Dst == b.dns6 {
		n.serveDNS(b, owner, &p, pkt)
		return
	}
	fanOut := n.overlay.fanOut(p.Dst)
	if fanOut && (p.Proto != packet.ProtoUDP || p.Fragment) {
		b.dropOutbound.Add(1)
		return
	}
	if !fanOut && owner >= ownerAttached && !n.overlay.contains(p.Dst) {
		n.egress(b, owner, &p, pkt)
		return
	}
	if p.Proto == packet.ProtoTCP && !fanOut {
		if s := n.streamStack(b, owner, &p); s != nil {
			injectDevice(s, &p, pkt)
			return
		}
	}
	b.trackOut(&p, owner, fanOut)
	n.output(pkt)
}

// trackOut records the flow of a packet that leaves through device owner (to fan out: a broadcast or
// multicast), so that replies go back to it.
func (b *tunBridge) trackOut(p *packet.Packet, owner uint8, fanOut bool) {
	if k, ok := p.OutboundFlow(fanOut); ok {
		b.flows.Track(k, owner)
	}
	if p.Proto == packet.ProtoTCP && !fanOut {
		b.noteTCP(tcpOut(p), p.TCPFlags)
	}
}

// tcpOut is the flow of a TCP segment this host sends.
func tcpOut(p *packet.Packet) packet.FlowKey {
	return packet.FlowKey{Proto: packet.ProtoTCP, Local: p.Src, Remote: p.Dst, LPort: p.SPort, RPort: p.DPort}
}

// noteTCP tells the flow table about a TCP segment's SYN, FIN or RST (FlowTable.TCPSegment), so a
// closed connection is forgotten minutes after it ends instead of hours: a busy exposed service
// otherwise filled the table with finished connections, and a full table evicts live ones.
func (b *tunBridge) noteTCP(k packet.FlowKey, flags uint8) {
	if flags&(packet.TCPSYN|packet.TCPFIN|packet.TCPRST) != 0 {
		b.flows.TCPSegment(k, flags)
	}
}

// outputStack sends a packet of the netstack's in TUN mode, noting its flow so replies go back to it.
func (n *Node) outputStack(pkt []byte) {
	if b := n.tun.Load(); b != nil {
		if p, ok := packet.Parse(pkt); ok {
			if k, ok := p.OutboundFlow(n.overlay.fanOut(p.Dst)); ok {
				b.flows.Track(k, ownerStack)
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
	p, ok := packet.Parse(pkt)
	if !ok {
		b.dropFiltered.Add(1)
		return
	}
	v := b.verdict(&p, n.exposed, n.overlay)
	if v != 0 && !n.filterACL(n.routes.Load(), from, pkt) {
		return
	}
	switch v {
	case ownerStack:
		if s := n.stack.Load(); s != nil {
			s.Inject(pkt)
		}
	case 0:
		b.dropFiltered.Add(1)
		if n.log.IsTrace() {
			n.log.Trace("filtered inbound packet", "from", from, "src", p.Src, "dst", p.Dst, "proto", p.Proto, "port", p.DPort)
		}
		if rst := packet.TCPReset(&p, pkt); rst != nil {
			n.sendq.send(from, rst, false)
		}
	default:
		if d := b.devs[v].Load(); d != nil {
			d.Write(pkt) // a full or closed device drops, as a NIC would
		}
	}
}

// exposedOwner is who serves a new flow to exposed port (to dst: this node, broadcast or multicast):
// the kernel, unless nothing holds the port on the device's address of dst's family, i.e. the
// service listens only on loopback (or not at all); then the netstack, which forwards to 127.0.0.1.
func (b *tunBridge) exposedOwner(proto uint8, dst netip.Addr, port uint16) uint8 {
	if b.loopbackOnly == nil {
		return ownerTUN
	}
	local := b.self4
	if dst.Is6() {
		local = b.self6
	}
	if b.loopbackOnly(proto, local, port) {
		return ownerStack
	}
	return ownerTUN
}

// verdict applies the filter of the file comment to an arriving packet, given the node's exposed
// ports and overlay: ownerTUN, ownerStack or 0 (drop).
func (b *tunBridge) verdict(p *packet.Packet, exposed map[Port]bool, o overlay) uint8 {
	toSelf := p.Dst == b.self4 || p.Dst == b.self6
	fanOut := !toSelf && o.fanOut(p.Dst)
	if !toSelf && !fanOut {
		return 0
	}
	if p.Fragment {
		return ownerTUN
	}
	switch p.Proto {
	case packet.ProtoTCP:
		if !toSelf {
			return 0
		}
		k := p.InboundFlow()
		if o, ok := b.flows.Lookup(k); ok {
			b.noteTCP(k, p.TCPFlags)
			return o
		}
		if p.TCPFlags&(packet.TCPSYN|packet.TCPACK|packet.TCPRST) == packet.TCPSYN && exposed[Port{"tcp", p.DPort}] {
			return b.exposedOwner(packet.ProtoTCP, p.Dst, p.DPort)
		}
	case packet.ProtoUDP:
		if o, ok := b.flows.Lookup(p.InboundFlow()); ok && toSelf {
			return o
		}
		if o, ok := b.flows.Lookup(p.WildcardFlow()); ok && toSelf {
			return o // a reply to our broadcast or multicast
		}
		if exposed[Port{"udp", p.DPort}] {
			return b.exposedOwner(packet.ProtoUDP, p.Dst, p.DPort)
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if !toSelf {
			return 0
		}
		switch {
		case p.ICMPEcho && p.ICMPReply:
			if o, ok := b.flows.Lookup(p.InboundFlow()); ok {
				return o
			}
			return ownerTUN
		case p.ICMPEcho:
			return ownerTUN // the kernel answers
		case p.ICMPError:
			inner, ok := packet.Parse(p.ICMPQuote)
			if !ok || (inner.Src != b.self4 && inner.Src != b.self6) {
				return 0
			}
			if k, ok := inner.OutboundFlow(false); ok {
				if o, ok := b.flows.Lookup(k); ok {
					return o
				}
			}
		}
	}
	return 0
}
