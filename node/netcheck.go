package node

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// coordConnected runs after every login: the node logs in to the standalone relays the coord announces
// and uses the coord's own relay, if it offers one, as the last resort (relayclient.go), and NAT
// discovery runs once in the background so the log and `warren status` say what kind of NAT the node
// is behind.
func (n *Node) coordConnected(w *control.Welcome, addr netip.AddrPort) {
	n.relays.use(w, addr)
	n.mu.Lock()
	n.coordAddr, n.probePort = addr, w.ProbePort
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		rep, err := n.Netcheck(n.ctx)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("NAT discovery failed", "error", err)
			}
			return
		}
		n.log.Info("NAT discovery", "public", rep.Public, "mapping", rep.Mapping, "allocation", rep.Allocation,
			"hairpin", rep.Hairpin, "coord_rtt", rep.CoordRTT.Round(time.Microsecond), "relay", rep.Relay,
			"portmap", n.portmapStatus())
		n.mu.Lock()
		n.nat = &rep
		n.mu.Unlock()
		// Peers pick their hole-punching technique by both sides' mappings, and aim at the ports a
		// sequential NAT allocates next (peer/birthday.go, peer/predict.go).
		mapping, ports := natMapping(rep)
		n.ep.SetMapping(mapping, ports)
		n.coord.sendEndpoints(&control.Endpoints{Endpoints: n.localEndpoints(), Mapping: mapping, Ports: ports})
	}()
}

// nudgeEvery bounds how often a stalled link makes the node nudge the coord (nudgeCoord).
const nudgeEvery = 2 * time.Second

// nudgeCoord runs when a direct link stalls (peer.Config.OnStall): the path may have changed under the
// node, most often because its NAT rebound to a new public port. Peers that dialled the node cannot
// follow it there by themselves (a QUIC client ignores a server's new address), so the coord must tell
// them, and it sees the new address only when the node next sends it something. The node sends its
// endpoints report again at once (coordClient.nudge), at most every nudgeEvery.
func (n *Node) nudgeCoord() {
	now := time.Now().UnixNano()
	last := n.nudged.Load()
	if now-last < int64(nudgeEvery) || !n.nudged.CompareAndSwap(last, now) {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() { // off the peer's path loop: a write to the control stream may wait for flow control
		defer n.wg.Done()
		n.coord.nudge()
	}()
}

// refreshPorts measures the NAT's port counter again after a birthday attempt moved it
// (peer.Config.OnPortsUsed) and reports the new pattern, so that peers' next attempt aims from there
// (peer/predict.go). One measurement at a time; one that fails or does not read as sequential changes
// nothing.
func (n *Node) refreshPorts() {
	if !n.portsBusy.CompareAndSwap(false, true) {
		return
	}
	n.mu.Lock()
	addr, probePort := n.coordAddr, n.probePort
	if n.closed || !addr.IsValid() || probePort == 0 {
		n.mu.Unlock()
		n.portsBusy.Store(false)
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		defer n.portsBusy.Store(false)
		ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
		defer cancel()
		alloc, ports := n.ep.PortPattern(ctx, addr, probePort)
		if alloc != peer.AllocSequential || !ports.Valid() || n.ep.Tunneled(addr) {
			return
		}
		n.mu.Lock()
		if n.nat != nil {
			rep := *n.nat
			rep.Ports = ports
			n.nat = &rep
		}
		n.mu.Unlock()
		n.ep.SetMapping(control.MappingDependent, ports)
		n.coord.sendEndpoints(&control.Endpoints{Endpoints: n.localEndpoints(), Mapping: control.MappingDependent, Ports: ports})
	}()
}

// errNoCoordYet is returned by Netcheck before the node has reached the coordination server.
var errNoCoordYet = errors.New("netcheck: the coordination server has not been reached yet")

// Netcheck probes the node's UDP connectivity through the coordination server: whether UDP works, the
// public address, the NAT's mapping behaviour, hairpinning, and the round trip to the coord and relay.
func (n *Node) Netcheck(ctx context.Context) (peer.NATReport, error) {
	n.mu.Lock()
	addr, probePort := n.coordAddr, n.probePort
	n.mu.Unlock()
	relays := n.relays.addrs()
	if !addr.IsValid() {
		return peer.NATReport{Mapping: peer.MappingUnknown}, errNoCoordYet
	}
	return n.ep.Netcheck(ctx, addr, probePort, relays) // over the TCP fallback: UDP false, mapping unknown
}

// transport names how the node reaches the server at addr: "tcp" over the TCP fallback, else "udp"
// ("" for no address).
func (n *Node) transport(addr netip.AddrPort) string {
	switch {
	case !addr.IsValid() || n.ep == nil:
		return ""
	case n.ep.Tunneled(addr):
		return "tcp"
	}
	return "udp"
}

// netcheckView renders a NAT report for the local API; logins are the states of the node's relay
// logins by relay address (relaySet.logins).
// coordTransport is how the node reaches the coord; transport names it for a relay (Node.transport).
func netcheckView(r peer.NATReport, logins map[netip.AddrPort]string, coordTransport string, transport func(netip.AddrPort) string) localapi.Netcheck {
	v := localapi.Netcheck{UDP: r.UDP, Mapping: r.Mapping, Allocation: r.Allocation, Hairpin: r.Hairpin,
		CoordRTTms: ms(r.CoordRTT), RelayRTTms: ms(r.RelayRTT), CoordTransport: coordTransport, RelayTransport: transport(r.Relay)}
	if r.Public.IsValid() {
		v.Public = r.Public.String()
	}
	if r.Ports != nil {
		v.PortDelta, v.LastPort = r.Ports.Delta, r.Ports.Last
	}
	if r.Relay.IsValid() {
		v.Relay = r.Relay.String()
	}
	for _, rr := range r.Relays {
		v.Relays = append(v.Relays, localapi.RelayCheck{Addr: rr.Addr.String(), OK: rr.OK, RTTms: ms(rr.RTT), InUse: rr.Addr == r.Relay,
			Login: logins[rr.Addr], Transport: transport(rr.Addr)})
	}
	return v
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// SetDirect turns direct peer paths on or off at run time (see Config.NoDirect); off affects new links
// only.
func (n *Node) SetDirect(on bool) { n.ep.SetDirect(on) }

// coordTransport is transport for the coord's address.
func (n *Node) coordTransport() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.transport(n.coordAddr)
}
