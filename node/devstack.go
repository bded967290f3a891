package node

// Device stacks: every TUN device on the bridge (the --tun device and each `warren run` device) has a
// userspace stack of its own (netstack.Config.DialEgress: promiscuous, so it takes packets to any
// address and answers from it). TCP that an app opens through the device to a peer ends there and
// rides the stream path, one QUIC stream per connection, as proxied TCP does: the peer delivers it to
// the exposed service as in proxy mode (acceptStream), and QUIC's congestion control runs end to end
// instead of TCP inside QUIC datagrams. UDP, ICMP and everything else to peers keep the packet path.
// A `warren run` device's stack also takes its traffic outside the overlay (egress.go).
//
// Which path a TCP flow takes is decided by its first segment from the device: a pure SYN to an
// address a peer owns, of no flow the table knows, opens a stream flow (ownerStream in the flow
// table), and every later segment of that 5-tuple goes to the stack. Segments of flows the table
// knows otherwise (the kernel's replies to a peer that connected over the packet path, and
// --packet-path) keep the packet path, and so does a SYN with Config.PacketPathTCP. The stack
// dials the stream only once the app's SYN is in (the SYN's retransmissions wait meanwhile); a
// refusal (port not exposed, rules, service down) or no link in time answers the SYN with a RST,
// so the app sees "connection refused" as it would over the packet path. Only segments from the
// node's own addresses reach this point (outputTUN), so the source of every stream is this node.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
	"github.com/warren-net/warren/tun"
)

// deviceMTU is the device stacks' MTU, and deviceMSS the MSS they see in every SYN from the device.
// The device is no link but a pipe into this host's kernel, which takes packets of any size up to
// 65535 bytes from it whatever the device's MTU: the MTU (1280, the overlay's) binds only what the
// kernel sends. So the stack sends segments of up to 64 KiB into it, one write each, instead of
// 1240-byte ones: the app's SYN advertises the MSS of the device's MTU, which injectDevice raises.
const (
	deviceMTU = 65535
	deviceMSS = deviceMTU - 40 - 20 - 40 // IPv6 header, TCP header, TCP options (timestamps, SACK)
)

// injectDevice hands a packet from a device to its stack, raising the MSS of a SYN to deviceMSS.
func injectDevice(s *netstack.Stack, p *packet.Packet, pkt []byte) {
	if p.Proto == packet.ProtoTCP && p.TCPFlags&packet.TCPSYN != 0 {
		packet.RaiseMSS(p, deviceMSS)
	}
	s.Inject(pkt)
}

// outputTUNLarge takes a large TCP segment (TSO, tun.Config.ReceiveLarge) from device owner whole
// where outputTUN would give it to the device's stack, which takes segments of any size and trusts
// the kernel's checksums: a flow on the stream path, or egress. Anywhere else (the packet path,
// DNS, a drop) it returns false, and the device cuts the segment into the MTU's for outputTUN. A
// large segment is never a SYN, so it opens no flow and has no MSS to raise.
func (n *Node) outputTUNLarge(b *tunBridge, owner uint8, pkt []byte) bool {
	p, ok := packet.Parse(pkt)
	if !ok || p.Proto != packet.ProtoTCP || (p.Src != b.self4 && p.Src != b.self6) ||
		p.Dst == b.dns4 || p.Dst == b.dns6 || n.overlay.fanOut(p.Dst) {
		return false
	}
	var s *netstack.Stack
	if owner >= ownerAttached && !n.overlay.contains(p.Dst) {
		if n.egressAllowed(owner) {
			s = b.stacks[owner].Load()
		}
	} else {
		s = n.streamStack(b, owner, &p)
	}
	if s == nil {
		return false
	}
	s.Inject(pkt)
	return true
}

// ownerStream marks a flow the device's stack carries on the stream path. It is 0, the filter's
// "drop" verdict, on purpose: a peer never sends packets of such a flow, so any that arrive are
// refused.
const ownerStream uint8 = 0

// newDeviceStack makes the stack of device dev of owner (tun.go, attach.go).
func (n *Node) newDeviceStack(dev *tun.Device, owner uint8, name string) (*netstack.Stack, error) {
	s, err := netstack.New(netstack.Config{
		MTU:    deviceMTU,
		Output: func(pkt []byte) { dev.Write(pkt) }, // a full or closed device drops, as a NIC would
		DialEgress: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.dialDevice(ctx, owner, network, addr)
		},
		Logger: n.log.Named(name + ".stack"),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: device stack: %w", name, err)
	}
	return s, nil
}

// dialDevice dials for device owner's stack: TCP to a peer on the stream path, anything else
// outside the overlay if the device may (egress.go).
func (n *Node) dialDevice(ctx context.Context, owner uint8, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("device dial %s: %w", addr, err)
	}
	if n.inOverlay(ap.Addr()) {
		if network != "tcp" {
			return nil, fmt.Errorf("%w: %s to %v from a device stack", socks.ErrNotAllowed, network, ap)
		}
		return n.dialDeviceStream(ctx, ap)
	}
	if !n.egressAllowed(owner) {
		return nil, fmt.Errorf("%w: %v is outside the overlay", socks.ErrNotAllowed, ap.Addr())
	}
	return n.dialEgress(ctx, network, addr)
}

// streamCounters count the device stacks' streams to peers by outcome: dialed, refused by the peer
// (port not exposed, rules, service down), failed (no link in time, no such peer).
type streamCounters [3]atomic.Uint64 // indexed like egressCounters

// dialDeviceStream opens the stream for a TCP connection an app opened through a device to dst.
func (n *Node) dialDeviceStream(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	k, ok := n.routes.Load().owner[dst.Addr().WithZone("")]
	if !ok {
		n.devStreams[egressFailed].Add(1)
		return nil, fmt.Errorf("%w: no peer owns %v", peer.ErrPeerUnreachable, dst.Addr())
	}
	c, err := n.ep.DialStream(ctx, k, peer.StreamHeader{Proto: peer.ProtoTCP, Port: dst.Port()})
	switch {
	case err == nil:
		n.devStreams[egressDialed].Add(1)
	case errors.Is(err, peer.ErrStreamRefused):
		n.devStreams[egressRefused].Add(1)
	default:
		n.devStreams[egressFailed].Add(1)
	}
	return c, err
}

// streamStack returns the stack of device owner if a TCP segment it sent to the overlay (not fanned
// out) goes there, opening a stream flow if it is the first SYN of one (file comment); else nil.
func (n *Node) streamStack(b *tunBridge, owner uint8, p *packet.Packet) *netstack.Stack {
	s := b.stacks[owner].Load()
	if s == nil || p.Fragment {
		return nil
	}
	k := tcpOut(p)
	if o, ok := b.flows.Lookup(k); ok {
		if o != ownerStream {
			return nil
		}
		b.noteTCP(k, p.TCPFlags)
		return s
	}
	if p.TCPFlags&(packet.TCPSYN|packet.TCPACK|packet.TCPRST) != packet.TCPSYN || n.cfg.PacketPathTCP {
		return nil
	}
	if _, ok := n.routes.Load().owner[p.Dst]; !ok {
		return nil
	}
	b.flows.Track(k, ownerStream)
	return s
}
