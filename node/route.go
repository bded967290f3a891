package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

// routeTable is an immutable snapshot of who owns which virtual IP and name. It is replaced as a whole
// on every peer-map change and read without locks on the packet path.
type routeTable struct {
	owner  map[netip.Addr]peer.Key // virtual IP → the peer it belongs to
	byName map[string]netip.Addr   // lower-case peer name → its IPv4
	peers  map[peer.Key]bool       // every peer, for broadcast fan-out
	grants map[peer.Key]*acl.Grant // what a peer restricted by access rules may reach here (acl.go)
}

// handleControl applies a welcome (this node's tag), a peer map or a delta from the coord, with the
// access rules they carry, then rebuilds routes and peer links.
func (n *Node) handleControl(m *control.Msg) {
	n.joins.handle(m, n.log)
	n.mu.Lock()
	n.applyACLsLocked(m)
	switch m.Type {
	case control.TypePeerMap:
		clear(n.peers)
		for _, p := range m.PeerMap.Peers {
			if k, ok := peer.KeyOf(p.Key); ok {
				n.peers[k] = p
			}
		}
	case control.TypePeerDelta:
		for _, p := range m.PeerDelta.Upsert {
			if k, ok := peer.KeyOf(p.Key); ok {
				n.peers[k] = p
			}
		}
		for _, kb := range m.PeerDelta.Remove {
			if k, ok := peer.KeyOf(kb); ok {
				delete(n.peers, k)
			}
		}
		if nl := m.PeerDelta.Networks; nl != nil && n.welcome != nil {
			n.logNetworkChangeLocked(n.welcome.Networks, nl.Names)
			n.setNetworksLocked(nl.Names)
		}
	}
	rt := &routeTable{owner: make(map[netip.Addr]peer.Key), byName: make(map[string]netip.Addr), peers: make(map[peer.Key]bool),
		grants: n.grantsLocked()}
	infos := make([]peer.Info, 0, len(n.peers))
	for k, p := range n.peers {
		rt.peers[k] = true
		for _, ip := range p.IPs {
			rt.owner[ip] = k
		}
		if len(p.IPs) > 0 {
			rt.byName[strings.ToLower(p.Name)] = p.IPs[0]
		}
		info := peer.Info{Key: k, Mapping: p.Mapping}
		if p.Online {
			info.Endpoints = p.Endpoints
		}
		infos = append(infos, info)
	}
	n.routes.Store(rt)
	n.mu.Unlock()
	n.limits.forget(rt.peers)
	n.forgetSendQueues(rt.peers)
	if n.ep != nil {
		n.ep.SetPeers(infos)
	}
	n.relayPeersChanged()
	n.saveCache()
}

// logNetworkChangeLocked logs networks the coord added or removed without this node asking (an
// owner approved its join, kicked or banned it, or deleted a network). n.mu must be held.
func (n *Node) logNetworkChangeLocked(before, after []string) {
	for _, name := range after {
		if !slices.Contains(before, name) {
			n.log.Info("now a member of network (join approved)", "network", name)
		}
	}
	for _, name := range before {
		if !slices.Contains(after, name) {
			n.log.Warn("no longer a member of network (removed by its owner, or the network was deleted)", "network", name)
		}
	}
}

// output sends one packet from the netstack to the peer that owns its destination.
func (n *Node) output(pkt []byte) {
	_, dst, ok := addrs(pkt)
	if !ok {
		n.dropNoRoute.Add(1)
		return
	}
	k, ok := n.routes.Load().owner[dst]
	if !ok {
		if n.isFanOut(dst) {
			n.fanOut(pkt)
			return
		}
		n.dropNoRoute.Add(1)
		return
	}
	n.send(k, pkt, false)
}

// receive accepts a packet from peer `from` only if its source is one of that peer's virtual IPs
// (anti-spoofing); a peer not in the route table shares no network with us and is dropped too.
func (n *Node) receive(from peer.Key, pkt []byte) {
	src, dst, ok := addrs(pkt)
	if !ok {
		n.dropSpoofed.Add(1)
		return
	}
	rt := n.routes.Load()
	if owner, ok := rt.owner[src]; !ok || owner != from {
		n.dropSpoofed.Add(1)
		if n.log.IsTrace() {
			n.log.Trace("drop spoofed packet", "from", from, "src", src)
		}
		return
	}
	if n.isFanOut(dst) && !n.limits.allow(from) {
		n.dropRateLimited.Add(1)
		return
	}
	if !n.filterACL(rt, from, pkt) {
		return
	}
	if s := n.stack.Load(); s != nil {
		s.Inject(pkt)
	}
}

// addrs reads the source and destination of an IPv4 or IPv6 packet without allocating.
func addrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) < 1 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

// resolve maps "NAME.warren" or a bare peer name to the peer's IPv4 from the peer map: no DNS query
// leaves the host for overlay names. Other names are looked up in DNS, unless OverlayOnly.
func (n *Node) resolve(ctx context.Context, name string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip, nil
	}
	lower := strings.ToLower(strings.TrimSuffix(name, "."))
	label, isOverlay := strings.CutSuffix(lower, ".warren")
	if ip, ok := n.routes.Load().byName[label]; ok {
		return ip, nil
	}
	n.mu.Lock()
	if n.welcome != nil && strings.EqualFold(label, n.cfg.Name) {
		ip := n.welcome.IPv4
		n.mu.Unlock()
		return ip, nil
	}
	n.mu.Unlock()
	if isOverlay || n.cfg.OverlayOnly {
		return netip.Addr{}, fmt.Errorf("%w: %q is not a peer in any of this node's networks", socks.ErrUnknownName, name)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %q: %w", name, err)
	}
	return ips[0].Unmap(), nil
}

// sortedPeers returns a copy of the peer map sorted by name.
func (n *Node) sortedPeers() []control.Peer {
	n.mu.Lock()
	out := make([]control.Peer, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, p)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b control.Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

var errClosed = errors.New("node is shutting down")
