package node

// Egress for `warren run`: unless --overlay-only, the namespace's default routes lead into its TUN
// device, and outputTUN hands the device's packets to destinations outside the overlay to the
// device's own stack (devstack.go), which ends each TCP connection and UDP flow there and dials the
// destination from the host by the proxy's rules (dial): never this host's own addresses without
// --allow-local. Its packets go straight back into the device, so there is no flow table to share:
// several namespaces using the same overlay address never see each other's flows. With
// --overlay-only nothing goes to the stack that way: a TCP segment is answered with a RST,
// everything else dropped (the namespace has no default route then, so only an app that routes by
// itself gets here).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/socks"
)

// egressCounters count the egress stacks' dials (connections and UDP flows), by protocol and
// outcome: dialed, refused by the proxy's rules, failed (unreachable, refused by the destination).
type egressCounters struct {
	tcp, udp [3]atomic.Uint64 // indexed by egressDialed, egressRefused, egressFailed
}

const (
	egressDialed = iota
	egressRefused
	egressFailed
)

// egressResults are the metric labels of the outcomes, in index order.
var egressResults = [3]string{"dialed", "refused", "failed"}

// dialEgress dials a destination outside the overlay for an egress stack, as the proxy would.
func (n *Node) dialEgress(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := n.dialEgressAddr(ctx, network, addr)
	counts := &n.egressN.tcp
	if network == "udp" {
		counts = &n.egressN.udp
	}
	switch {
	case err == nil:
		counts[egressDialed].Add(1)
	case errors.Is(err, socks.ErrNotAllowed):
		counts[egressRefused].Add(1)
	default:
		counts[egressFailed].Add(1)
	}
	return c, err
}

func (n *Node) dialEgressAddr(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("egress %s: %w", addr, err)
	}
	if n.inOverlay(ap.Addr()) {
		return nil, fmt.Errorf("%w: %v is inside the overlay", socks.ErrNotAllowed, ap.Addr())
	}
	return n.dial(ctx, network, addr)
}

// egressAllowed reports whether device owner may reach destinations outside the overlay: a
// `warren run` device, unless --overlay-only.
func (n *Node) egressAllowed(owner uint8) bool {
	return owner >= ownerAttached && !n.cfg.OverlayOnly
}

// egress passes a packet that device owner sent outside the overlay to its egress stack: TCP and
// UDP only (the stack would answer pings to any address itself, which would be a lie).
func (n *Node) egress(b *tunBridge, owner uint8, p *packet.Packet, pkt []byte) {
	if s := b.stacks[owner].Load(); s != nil && n.egressAllowed(owner) && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) {
		injectDevice(s, p, pkt)
		return
	}
	b.dropOutbound.Add(1)
	if d := b.devs[owner].Load(); d != nil {
		if rst := packet.TCPReset(p, pkt); rst != nil {
			d.Write(rst)
		}
	}
}
