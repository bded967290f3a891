package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/socks"
)

// routeTable is an immutable snapshot of who owns which virtual IP and name. It is replaced as a whole
// on every peer-map change and read without locks on the packet path.
type routeTable struct {
	owner     map[netip.Addr]peer.Key   // virtual IP → the peer it belongs to
	byName    map[string]netip.Addr     // lower-case peer name → its IPv4, for names one peer has (names.go)
	ambiguous []string                  // names several peers claim, sorted (names.go)
	names     map[peer.Key]string       // each peer's name, for reverse lookups (dns.go)
	ips       map[peer.Key][]netip.Addr // each peer's addresses, for AAAA answers (dns.go)
	peers     map[peer.Key]bool         // every peer, for broadcast fan-out
	grants    map[peer.Key]*acl.Grant   // what a peer restricted by access rules may reach here (acl.go)
}

// buildRoutes is the route table of a peer map under the access rules (compiled, by network) for
// this node (self), and the peer links to have: one per peer, with its endpoints while it is online.
// It only reads its arguments.
func buildRoutes(peers map[peer.Key]control.Peer, policies map[string]*acl.Policy, self acl.Member) (*routeTable, []peer.Info) {
	rt := &routeTable{owner: make(map[netip.Addr]peer.Key), peers: make(map[peer.Key]bool),
		names: make(map[peer.Key]string, len(peers)), ips: make(map[peer.Key][]netip.Addr, len(peers))}
	rt.byName, rt.ambiguous = nameIndex(peers, self.Name)
	rt.grants = grants(peers, policies, self, rt.ambiguous)
	infos := make([]peer.Info, 0, len(peers))
	for k, p := range peers {
		rt.peers[k] = true
		rt.names[k] = p.Name
		rt.ips[k] = slices.Clone(p.IPs)
		for _, ip := range p.IPs {
			rt.owner[ip] = k
		}
		info := peer.Info{Key: k, Name: p.Name, Mapping: p.Mapping}
		if p.Ports != nil { // validated with the message (control.Validate)
			ports := *p.Ports
			info.Ports = &ports
		}
		if p.Online {
			info.Endpoints = p.Endpoints
		}
		infos = append(infos, info)
	}
	return rt, infos
}

// grants works out what each restricted peer may reach on this node (see acl.go's file comment).
// Peers whose rules match alike share one Grant. nil = no rules anywhere.
// A name in ambiguous (claimed by several peers) is nobody's: it matches no rule by name.
func grants(peers map[peer.Key]control.Peer, policies map[string]*acl.Policy, self acl.Member, ambiguous []string) map[peer.Key]*acl.Grant {
	if len(policies) == 0 {
		return nil
	}
	out := make(map[peer.Key]*acl.Grant)
	shared := make(map[string]*acl.Grant)
	type match struct {
		policy *acl.Policy
		rules  []int
	}
	var matches []match
	var sig strings.Builder
	for k, p := range peers {
		from := acl.Member{Name: p.Name, Tag: p.Tag, Key: identity.Fingerprint(p.Key)}
		if slices.Contains(ambiguous, strings.ToLower(p.Name)) {
			from.Name = "" // a name several peers claim is nobody's (names.go)
		}
		matches = matches[:0]
		open := false
		sig.Reset()
		for _, network := range p.Networks {
			pol, ok := policies[network]
			if !ok {
				open = true
				break
			}
			m := match{policy: pol, rules: pol.Matching(nil, from, self)}
			matches = append(matches, m)
			sig.WriteString(network)
			for _, i := range m.rules {
				sig.WriteByte(',')
				sig.WriteString(strconv.Itoa(i))
			}
			sig.WriteByte(';')
		}
		if open {
			continue
		}
		g := shared[sig.String()]
		if g == nil {
			g = &acl.Grant{}
			for _, m := range matches {
				for _, i := range m.rules {
					m.policy.AddRule(g, i)
				}
			}
			shared[sig.String()] = g
		}
		out[k] = g
	}
	return out
}

// handleControl applies a welcome (this node's tag), a peer map or a delta from the coord: the peer
// state takes the peers and access rules and publishes the new routes, then the network list, the
// per-peer rate limits and send queues, the peer links, the relays' consent lists and the cache
// follow.
func (n *Node) handleControl(m *control.Msg) {
	n.joins.handle(m, n.log)
	rt, infos := n.peers.apply(m)
	if m.Type == control.TypePeerDelta && m.PeerDelta.Networks != nil {
		n.networksChanged(m.PeerDelta.Networks.Names)
	}
	n.limits.forget(rt.peers)
	n.sendq.forget(rt.peers)
	if n.ep != nil {
		n.ep.SetPeers(infos)
	}
	n.relays.peersChanged()
	n.saveCache()
}

// networksChanged records and logs networks the coord added or removed without this node asking (an
// owner approved its join, kicked or banned it, or deleted a network).
func (n *Node) networksChanged(after []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.welcome == nil {
		return
	}
	before := n.welcome.Networks
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
	n.setNetworksLocked(after)
}

// output sends one packet from the netstack to the peer that owns its destination.
func (n *Node) output(pkt []byte) {
	_, dst, ok := packet.Addrs(pkt)
	if !ok {
		n.drops.noRoute.Add(1)
		return
	}
	k, ok := n.routes.Load().owner[dst]
	if !ok {
		if n.overlay.fanOut(dst) {
			n.fanOut(pkt)
			return
		}
		n.drops.noRoute.Add(1)
		return
	}
	n.sendq.send(k, pkt, false)
}

// receive accepts a packet from peer `from` only if admit does, and the access rules let it in.
func (n *Node) receive(from peer.Key, pkt []byte) {
	if !n.admit(from, pkt) {
		return
	}
	if !n.filterACL(n.routes.Load(), from, pkt) {
		return
	}
	if s := n.stack.Load(); s != nil {
		s.Gather(pkt)
	}
}

func (n *Node) flushReceived() {
	if s := n.stack.Load(); s != nil {
		s.Flush()
	}
}

// admit checks a packet from a peer in either mode: its source must be one of the sending peer's
// virtual IPs (anti-spoofing; a peer not in the route table shares no network with us and is
// dropped too), and broadcast and multicast are rate-limited per sender.
func (n *Node) admit(from peer.Key, pkt []byte) bool {
	src, dst, ok := packet.Addrs(pkt)
	if !ok {
		n.drops.spoofed.Add(1)
		return false
	}
	if owner, ok := n.routes.Load().owner[src]; !ok || owner != from {
		n.drops.spoofed.Add(1)
		if n.log.IsTrace() {
			n.log.Trace("drop spoofed packet", "from", from, "src", src)
		}
		return false
	}
	if n.overlay.fanOut(dst) && !n.limits.allow(from) {
		n.drops.rateLimited.Add(1)
		return false
	}
	return true
}

// resolve maps "NAME.warren" to the peer's IPv4 from the peer map: no DNS query leaves the host for
// overlay names. Other names, bare ones included, are looked up in DNS, unless OverlayOnly: a peer's
// name is its owner's choice, so as a bare name it could stand in for "localhost" or a host name of
// the user's own network ("db", "gitlab") and pull what an app meant for it, credentials and all,
// into the overlay. The proxy resolves with this.
func (n *Node) resolve(ctx context.Context, name string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip, nil
	}
	lower := strings.ToLower(strings.TrimSuffix(name, "."))
	if label, isOverlay := strings.CutSuffix(lower, ".warren"); isOverlay {
		if ip, ok := n.peerIP(label); ok {
			return ip, nil
		}
		return netip.Addr{}, fmt.Errorf("%w: %q is not a peer in any of this node's networks", socks.ErrUnknownName, name)
	}
	if n.cfg.OverlayOnly {
		return netip.Addr{}, fmt.Errorf("%w: %q is not a NAME.warren name, and the proxy is overlay-only", socks.ErrUnknownName, name)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %q: %w", name, err)
	}
	return hostAnswer(name, ips, n.overlay)
}

// resolvePeer is resolve for a target that can only be a peer (`warren ping`): a bare name is a
// peer's name too.
func (n *Node) resolvePeer(ctx context.Context, name string) (netip.Addr, error) {
	if ip, ok := n.peerIP(strings.ToLower(strings.TrimSuffix(name, "."))); ok {
		return ip, nil
	}
	return n.resolve(ctx, name)
}

// peerIP is the IPv4 of the peer, or of this node, named label (lower case, without .warren).
func (n *Node) peerIP(label string) (netip.Addr, bool) {
	if ip, ok := n.routes.Load().byName[label]; ok {
		return ip, true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.welcome != nil && strings.EqualFold(label, n.peers.selfName()) {
		return n.welcome.IPv4, true
	}
	return netip.Addr{}, false
}

var errClosed = errors.New("node is shutting down")
