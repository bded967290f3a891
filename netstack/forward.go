package netstack

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// localDialTimeout bounds the dial to an exposed service on the host; the remote's SYN waits that long.
const localDialTimeout = 5 * time.Second

// admitForward counts a forwarder goroutine in ns.wg while the stack is open, and the caller calls
// ns.wg.Done when it ends; once the stack is closed it resets the connection and returns false.
func (ns *Stack) admitForward(r *tcp.ForwarderRequest) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		r.Complete(true)
		return false
	}
	ns.wg.Add(1) // under mu while open: see Stack.mu
	return true
}

// forwardTCP handles a new inbound connection (a SYN to one of our addresses that no endpoint
// listens for), on a goroutine gVisor's forwarder starts (at most maxInFlightForwards at once).
// Exposed ports are dialed on the host first and then accepted and spliced, so a service that is
// down looks exactly like an unexposed port: a RST, which the remote side reports as "connection
// refused".
func (ns *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	if !ns.admitForward(r) {
		return
	}
	defer ns.wg.Done()

	id := r.ID()
	port := id.LocalPort
	from := addrOf(id.RemoteAddress)
	if !ns.startHandshake(from) {
		ns.stats.forwardsRefused.Add(1)
		ns.log.Debug("reset connection: too many handshakes from one address", "from", from, "port", port)
		r.Complete(true)
		return
	}
	defer ns.endHandshake(from)
	if !ns.cfg.Exposed("tcp", port) {
		ns.stats.forwardsRefused.Add(1)
		if ns.log.IsTrace() {
			ns.log.Trace("reset connection to unexposed port", "port", port, "from", id.RemoteAddress, "from_port", id.RemotePort)
		}
		r.Complete(true)
		return
	}
	if !ns.cfg.Admit("tcp", netip.AddrPortFrom(from, id.RemotePort), port) {
		ns.stats.forwardsRefused.Add(1)
		if ns.log.IsTrace() {
			ns.log.Trace("reset connection not admitted", "port", port, "from", id.RemoteAddress, "from_port", id.RemotePort)
		}
		r.Complete(true)
		return
	}
	ctx, cancel := context.WithTimeout(withFlow(ns.ctx, Flow{Src: netip.AddrPortFrom(from, id.RemotePort),
		Dst: netip.AddrPortFrom(addrOf(id.LocalAddress), port)}), localDialTimeout)
	local, err := ns.cfg.DialLocal(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	cancel()
	if err != nil {
		ns.log.Debug("exposed port not answering on localhost", "port", port, "error", err)
		ns.stats.forwardsRefused.Add(1)
		r.Complete(true)
		return
	}
	if ns.splice(r, local) {
		ns.log.Debug("forwarding connection", "port", port, "from", id.RemoteAddress)
	}
}

// splice completes the handshake of r and splices the connection to other in a tracked relay,
// or resets it and closes other; it reports whether the connection is spliced.
func (ns *Stack) splice(r *tcp.ForwarderRequest, other net.Conn) bool {
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The handshake failed (e.g. the SYN was a duplicate, or the stack is closing).
		ns.log.Debug("accept forwarded connection", "port", r.ID().LocalPort, "error", tcpErr(terr))
		other.Close()
		r.Complete(true)
		return false
	}
	r.Complete(false)
	remote := newTCPConn(&wq, ep) // bicopy waits on its Peek: no buffer while quiet
	// The relay runs on goroutines of its own (a quiet host socket parks without one).
	ns.stats.forwardsActive.Add(1)
	if !ns.relays.Start(remote, nil, other, func() { // half-closes with CloseWrite; on error closes both
		ns.stats.forwardsActive.Add(^uint64(0))
		remote.Close()
		other.Close()
	}) {
		return false // closed: done ran
	}
	ns.stats.forwardsAccepted.Add(1)
	return true
}

// startHandshake counts an inbound connection from remote until endHandshake, unless remote has
// maxHandshakesFrom under way already.
func (ns *Stack) startHandshake(remote netip.Addr) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.handshakes[remote] >= maxHandshakesFrom {
		return false
	}
	ns.handshakes[remote]++
	return true
}

func (ns *Stack) endHandshake(remote netip.Addr) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.handshakes[remote]--; ns.handshakes[remote] <= 0 {
		delete(ns.handshakes, remote)
	}
}

// addrOf converts a gVisor address to a netip.Addr (IPv4-mapped IPv6 addresses unmapped) without
// allocating.
func addrOf(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16()).Unmap()
}
