package netstack

// Egress stacks (Config.DialEgress): the node gives each `warren run` namespace one, to reach
// destinations outside the overlay. The namespace routes everything through its TUN device; the node
// injects the packets to non-overlay destinations here. The NIC is promiscuous (it takes packets to
// any address, as if it owned it) and spoofing (it answers from that address), so the TCP forwarder
// sees every SYN with its real destination, and gVisor's UDP forwarder every new flow. Each is dialed
// with DialEgress, which applies the proxy's rules (no host addresses, nothing with --overlay-only),
// and spliced: the client's connection ends in this stack, a new one leaves from the host.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Egress limits.
const (
	// egressDialTimeout bounds the host dial of an egress connection; the client's SYN waits that
	// long (it retransmits meanwhile, which the forwarder ignores while the dial runs).
	egressDialTimeout = 15 * time.Second
	// maxEgressConns bounds the spliced egress TCP connections of one stack; more are reset.
	maxEgressConns = 4096
	// maxEgressUDPFlows bounds the egress UDP flows (each a host socket) of one stack; datagrams of
	// new flows beyond it are dropped.
	maxEgressUDPFlows = 1024
)

// setupEgress makes the NIC promiscuous and spoofing and installs the egress forwarders.
func (ns *Stack) setupEgress() error {
	if err := ns.s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: promiscuous mode: %v", tcpErr(err))
	}
	if err := ns.s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: spoofing: %v", tcpErr(err))
	}
	fwd := tcp.NewForwarder(ns.s, tcpRcvWnd, maxInFlightForwards, ns.egressTCP)
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	ufwd := udp.NewForwarder(ns.s, ns.egressUDP)
	ns.s.SetTransportProtocolHandler(udp.ProtocolNumber, ufwd.HandlePacket)
	return nil
}

// egressTCP handles a client's new connection (on a goroutine of gVisor's forwarder, at most
// maxInFlightForwards at once): the destination is dialed first, so a refused or unreachable one
// looks to the client like it would without warren, a reset (or its SYN timing out meanwhile).
func (ns *Stack) egressTCP(r *tcp.ForwarderRequest) {
	if !ns.admitForward(r) {
		return
	}
	defer ns.wg.Done()

	id := r.ID()
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if ns.stats.forwardsActive.Load() >= maxEgressConns {
		ns.stats.forwardsRefused.Add(1)
		ns.log.Debug("reset egress connection: too many open", "dst", dst)
		r.Complete(true)
		return
	}
	ctx, cancel := context.WithTimeout(ns.ctx, egressDialTimeout)
	out, err := ns.cfg.DialEgress(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		ns.stats.forwardsRefused.Add(1)
		ns.log.Debug("reset egress connection", "dst", dst, "error", err)
		r.Complete(true)
		return
	}
	if ns.splice(r, out) && ns.log.IsTrace() {
		ns.log.Trace("egress connection", "dst", dst)
	}
}

// egressUDP handles the first datagram of a client's new UDP flow, synchronously on the stack's
// receive path: it only makes the flow's endpoint (which queues the datagram) and leaves the dial to
// the flow's goroutine.
func (ns *Stack) egressUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if dst.Addr().IsMulticast() || ns.stats.egressUDPFlows.Add(1) > maxEgressUDPFlows {
		ns.stats.egressUDPFlows.Add(-1)
		ns.stats.forwardsRefused.Add(1)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		ns.stats.egressUDPFlows.Add(-1)
		ns.log.Debug("egress UDP flow", "dst", dst, "error", tcpErr(terr))
		return
	}
	client := gonet.NewUDPConn(&wq, ep)
	if !ns.goTracked(func() { ns.egressUDPFlow(client, dst) }, client) {
		client.Close()
		ns.stats.egressUDPFlows.Add(-1)
	}
}

// egressUDPFlow dials dst on the host and copies datagrams both ways until the flow is idle for
// udpIdleTimeout, either side fails, or the stack closes.
func (ns *Stack) egressUDPFlow(client *gonet.UDPConn, dst netip.AddrPort) {
	defer ns.stats.egressUDPFlows.Add(-1)
	ctx, cancel := context.WithTimeout(ns.ctx, egressDialTimeout)
	host, err := ns.cfg.DialEgress(ctx, "udp", dst.String())
	cancel()
	if err != nil {
		ns.stats.forwardsRefused.Add(1)
		ns.log.Debug("egress UDP flow refused", "dst", dst, "error", err)
		ns.untrack(client)
		return
	}
	var last atomic.Int64 // unix nanoseconds of the last datagram either way
	last.Store(time.Now().UnixNano())
	if !ns.goTracked(func() { copyIdle(host, client, &last) }, host) {
		host.Close()
		ns.untrack(client)
		return
	}
	copyIdle(client, host, &last)
	ns.untrack(client, host)
}

// copyIdle copies datagrams from src to dst until a read fails, or times out with no datagram either
// way (last) for udpIdleTimeout; then it closes both, which ends the other direction too.
func copyIdle(dst, src net.Conn, last *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, maxDatagram)
	var armed time.Time // when the deadline was last moved: at most once per second
	for {
		if now := time.Now(); now.Sub(armed) >= time.Second {
			src.SetReadDeadline(now.Add(udpIdleTimeout))
			armed = now
		}
		n, err := src.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < udpIdleTimeout {
				armed = time.Time{}
				continue
			}
			return
		}
		last.Store(time.Now().UnixNano())
		dst.Write(buf[:n]) // UDP: a failed send is a lost datagram
	}
}
