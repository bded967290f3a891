package node

import (
	"net"
	"net/netip"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/portmap"
	"github.com/warren-net/warren/peer"
)

// startPortmap asks the home router, the default route's gateway, to map the node's UDP port
// (internal/portmap: PCP, else NAT-PMP, else UPnP-IGD) if Config.Portmap asks for it, unless NoDirect
// says no direct paths, the socket is bound to loopback (nothing beyond this host could use a
// mapping; the demo, benchmarks and tests listen there) or the host has no default gateway.
func (n *Node) startPortmap() {
	if !n.cfg.Portmap || n.cfg.NoDirect || listensOnLoopback(n.cfg.Listen) {
		return
	}
	gw, err := portmap.DefaultGateway()
	if err != nil {
		n.log.Info("port mapping off", "reason", err)
		return
	}
	n.mapPort(netip.AddrPortFrom(gw, portmap.ServerPort), n.ep.LocalAddr().Port())
}

// mapPort starts the Mapper for the UDP port with the router at gateway. The external address
// becomes the first candidate endpoint (localEndpoints); each change goes to the coord at once. The
// Mapper renews the mapping until Close, which deletes it.
func (n *Node) mapPort(gateway netip.AddrPort, port uint16) {
	m, err := portmap.Start(portmap.Config{Gateway: gateway, InternalPort: port,
		OnChange: func(portmap.Mapping) { n.reportEndpoints() }, Log: n.log.Named("portmap").Info})
	if err != nil {
		n.log.Warn("port mapping off", "error", err)
		return
	}
	n.portmap.Store(m)
}

// extraEndpoints are the endpoints localEndpoints lists first: the router's external address for
// the node's port, if it mapped one, then Config.Advertise.
func (n *Node) extraEndpoints() []netip.AddrPort {
	if m := n.portmap.Load(); m != nil {
		if ext := m.Current().External; ext.IsValid() {
			return append([]netip.AddrPort{ext}, n.cfg.Advertise...)
		}
	}
	return n.cfg.Advertise
}

// portmapStatus is what netcheck shows: "PROTOCOL EXTERNAL", "none" while there is no mapping,
// "off" when the node does not try (Config.Portmap unset, NoDirect, a loopback socket, no default
// gateway).
func (n *Node) portmapStatus() string {
	if m := n.portmap.Load(); m != nil {
		return m.Current().String()
	}
	return "off"
}

// closePortmap deletes the mapping on the router; at most about a second.
func (n *Node) closePortmap() {
	if m := n.portmap.Load(); m != nil {
		if err := m.Close(); err != nil {
			n.log.Debug("port mapping: delete", "error", err)
		}
	}
}

// reportEndpoints sends the coord the node's endpoints again, with the NAT type of the last
// discovery. Before the first discovery it sends nothing: the discovery reports the endpoints as it
// ends, the mapped address among them.
func (n *Node) reportEndpoints() {
	n.mu.Lock()
	rep := n.nat
	closed := n.closed
	n.mu.Unlock()
	if rep == nil || closed || n.coord == nil {
		return
	}
	mapping, ports := natMapping(*rep)
	n.coord.sendEndpoints(&control.Endpoints{Endpoints: n.localEndpoints(), Mapping: mapping, Ports: ports})
}

// natMapping is how a NAT report goes to the coord: the mapping behaviour, and the port pattern of
// an endpoint-dependent NAT that allocates in sequence (nil otherwise).
func natMapping(rep peer.NATReport) (control.Mapping, *control.Ports) {
	mapping := control.Mapping(rep.Mapping)
	if rep.Mapping == peer.MappingUnknown {
		mapping = control.MappingUnknown
	}
	ports := rep.Ports
	if mapping != control.MappingDependent || !ports.Valid() {
		ports = nil
	}
	return mapping, ports
}

// listensOnLoopback reports whether the UDP address the node binds (Config.Listen) is a loopback one.
func listensOnLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
