package node

// Access rules (ACLs) are enforced here, at the receiving node. The coord sends the rule list of
// every network this node is in that has one (control.ACL); on every change of the peer map or the
// rules, handleControl works out per peer what it may reach on this node (an acl.Grant) and puts it in
// the route table, so the packet path only looks it up:
//
//   - a peer that shares at least one network without rules is not restricted (the default: exposed
//     ports are reachable);
//   - otherwise it may open what any rule of any shared network allows from it to this node.
//
// What is checked: new TCP connections (a SYN on the packet path, a stream on the stream path), UDP
// datagrams to exposed ports (unicast, broadcast, multicast), ICMP echo requests. Replies and
// segments of established connections pass, so a change applies to new connections and datagrams
// within the seconds the coord takes to deliver it. Exposure is checked as before: rules never open
// a port the node does not expose. Refused TCP gets a RST (or a refused stream), as a closed port.
//
// Where: on the packet path, filterACL judges each packet as it arrives, and in proxy mode the
// netstack's forwarders ask stackAdmit again about what gVisor has reassembled and parsed. The
// second check is the one that counts for TCP and UDP: a single packet can hide what it opens (a SYN
// split so that its first fragment ends before the flags, a header chain longer than parsePacket
// walks), and non-first fragments, which carry no transport header, must pass filterACL (large UDP
// datagrams fragment at the overlay MTU). filterACL stays as the cheap early drop, and refuses what
// it cannot read from a peer under rules. ICMP echo is answered inside gVisor's IP layer, where no
// hook exists, so for it filterACL is the only check; it suffices: the ICMP type is in the first 8
// bytes of the message, which only a first fragment carries (later ones start at offset 8 or more,
// and gVisor, like Linux, discards a datagram whose fragments overlap), and a first fragment cut
// shorter does not parse. In TUN mode the kernel reassembles; tunVerdict admits only packets it can
// read in full, non-first fragments aside.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// applyACLsLocked records the rule lists a control message carries: a peer map replaces them all, a
// delta replaces the networks it names (no rules = cleared). A welcome carries this node's tag. n.mu
// must be held.
func (n *Node) applyACLsLocked(m *control.Msg) {
	var lists []control.ACL
	switch m.Type {
	case control.TypeWelcome:
		n.selfTag = m.Welcome.Tag
		if w := m.Welcome.Name; w != "" && w != n.selfName {
			if w != n.cfg.Name {
				n.log.Warn("the coordination server knows this node by another name: names stay with the node's key, so it goes by that name (use `warren rename` to change it)",
					"name", w, "configured", n.cfg.Name)
			}
			n.selfName = w
		}
		return
	case control.TypePeerMap:
		clear(n.aclRules)
		clear(n.policies)
		lists = m.PeerMap.ACLs
	case control.TypePeerDelta:
		lists = m.PeerDelta.ACLs
	}
	for _, a := range lists {
		if len(a.Rules) == 0 {
			delete(n.aclRules, a.Network)
			delete(n.policies, a.Network)
			continue
		}
		p, err := acl.Compile(a.Rules)
		if err != nil {
			// Rules this node cannot read (a newer server's syntax?) allow nothing: fail closed.
			n.log.Error("cannot read the access rules of a network; refusing what they would allow", "network", a.Network, "error", err)
			p = &acl.Policy{}
		}
		n.aclRules[a.Network] = a.Rules
		n.policies[a.Network] = p
	}
}

// grantsLocked works out what each restricted peer may reach on this node (see the file comment).
// Peers whose rules match alike share one Grant. nil = no rules anywhere. n.mu must be held.
func (n *Node) grantsLocked() map[peer.Key]*acl.Grant {
	if len(n.policies) == 0 {
		return nil
	}
	self := acl.Member{Name: n.selfNameLocked(), Tag: n.selfTag}
	if n.key != nil {
		self.Key = n.key.Fingerprint()
	}
	_, ambiguous := nameIndex(n.peers, self.Name)
	grants := make(map[peer.Key]*acl.Grant)
	shared := make(map[string]*acl.Grant)
	type match struct {
		policy *acl.Policy
		rules  []int
	}
	var matches []match
	var sig strings.Builder
	for k, p := range n.peers {
		from := acl.Member{Name: p.Name, Tag: p.Tag, Key: identity.Fingerprint(p.Key)}
		if slices.Contains(ambiguous, strings.ToLower(p.Name)) {
			from.Name = "" // a name several peers claim is nobody's (names.go)
		}
		matches = matches[:0]
		open := false
		sig.Reset()
		for _, network := range p.Networks {
			pol, ok := n.policies[network]
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
		grants[k] = g
	}
	return grants
}

// allows reports whether peer from may open proto/port on this node under the access rules.
func (rt *routeTable) allows(from peer.Key, proto acl.Proto, port uint16) bool {
	g, restricted := rt.grants[from]
	return !restricted || g.Allows(proto, port)
}

// aclAdmits applies the access rules to a packet from peer `from` to this node: TCP SYNs, UDP to
// exposed ports and ICMP echo requests need a grant; everything else passes, non-first fragments
// too (the forwarders judge the reassembled datagram; see the file comment).
func (n *Node) aclAdmits(rt *routeTable, from peer.Key, p *packet) bool {
	g, restricted := rt.grants[from]
	if !restricted || p.fragment {
		return true
	}
	switch p.proto {
	case protoTCP:
		if len(p.transport) < 14 {
			return false // a first fragment that ends before the flags: no honest sender cuts a TCP header
		}
		// A connection request is what gVisor's forwarder takes for one: SYN without ACK (with RST
		// or FIN too).
		return p.tcpFlags&(tcpSYN|tcpACK) != tcpSYN || g.Allows(acl.TCP, p.dport)
	case protoUDP:
		return !n.exposed[Port{"udp", p.dport}] || g.Allows(acl.UDP, p.dport)
	case protoICMP, protoICMPv6:
		return !p.icmpEcho || p.icmpReply || g.Allows(acl.ICMP, 0)
	}
	return true
}

// filterACL is the packet path's check (proxy and TUN mode alike): it reports whether pkt from peer
// `from` may go on, and answers a refused TCP SYN with a RST.
func (n *Node) filterACL(rt *routeTable, from peer.Key, pkt []byte) bool {
	if _, restricted := rt.grants[from]; !restricted {
		return true
	}
	p, ok := parsePacket(pkt)
	if !ok {
		// Truncated, or more IPv6 extension headers than parsePacket walks: gVisor may still read
		// it, so it is refused rather than waved through.
		n.aclRefused(from, 0, 0)
		return false
	}
	if n.aclAdmits(rt, from, &p) {
		return true
	}
	n.aclRefused(from, p.proto, p.dport)
	if rst := tcpReset(&p, pkt); rst != nil {
		n.send(from, rst, false)
	}
	return false
}

// stackAdmit returns the netstack's Admit (netstack.Config.Admit): the access rules applied to a
// connection or datagram that gVisor has reassembled. remote is a peer's address (receive made sure
// every packet carries one of its sender's own) or one of self, the node's own addresses (a
// connection from this node to itself inside the stack), which rules do not cover. An address no
// peer owns any more (removed since its packet arrived) is refused while rules are in force.
func (n *Node) stackAdmit(self ...netip.Addr) func(proto string, remote netip.AddrPort, port uint16) bool {
	return func(proto string, remote netip.AddrPort, port uint16) bool {
		rt := n.routes.Load()
		if rt.grants == nil {
			return true
		}
		p, num := acl.TCP, uint8(protoTCP)
		if proto == "udp" {
			p, num = acl.UDP, protoUDP
		}
		from, ok := rt.owner[remote.Addr()]
		if ok && rt.allows(from, p, port) || !ok && slices.Contains(self, remote.Addr()) {
			return true
		}
		n.aclRefused(from, num, port)
		return false
	}
}

// aclLogEvery bounds the debug lines about refused packets.
const aclLogEvery = time.Second

// aclRefused counts a refusal and logs it at debug level, at most once per aclLogEvery (with the
// number of refusals not logged), so a flood costs no allocation.
func (n *Node) aclRefused(from peer.Key, proto uint8, port uint16) {
	n.dropACL.Add(1)
	if !n.log.IsDebug() {
		return
	}
	now := time.Now().UnixNano()
	last := n.aclLogAt.Load()
	if now-last < int64(aclLogEvery) || !n.aclLogAt.CompareAndSwap(last, now) {
		n.aclLogQuiet.Add(1)
		return
	}
	n.log.Debug("access rules refused a connection or packet", "peer", from, "proto", proto, "port", port,
		"refused_unlogged", n.aclLogQuiet.Swap(0))
}

// ACL sets ("set", with rules), clears ("clear") or reads ("show") a network's access rules through
// the coordination server, and returns the rules now in force.
func (n *Node) ACL(ctx context.Context, op, network string, rules []control.ACLRule) (*control.ACL, error) {
	o := map[string]control.Op{"set": control.OpACLSet, "clear": control.OpACLClear, "show": control.OpACLShow}[op]
	if o == "" {
		return nil, fmt.Errorf("unknown rules operation %q (want set, clear or show)", op)
	}
	if n.coord == nil {
		return nil, errCoordOffline
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rep, err := n.coord.request(ctx, control.Request{Op: o, Network: network, Rules: rules})
	if err != nil {
		return nil, err
	}
	if rep.ACL == nil {
		return &control.ACL{Network: network, Rules: []control.ACLRule{}}, nil
	}
	return rep.ACL, nil
}

// handleACLAPI serves POST /v1/acl for `warren network acl`.
func (n *Node) handleACLAPI(w http.ResponseWriter, r *http.Request) {
	var req localapi.ACLRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, acl.MaxFileSize*2)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "bad request: " + err.Error()})
		return
	}
	rules := make([]control.ACLRule, len(req.Rules))
	for i, r := range req.Rules {
		rules[i] = control.ACLRule(r)
	}
	a, err := n.ACL(r.Context(), req.Op, req.Network, rules)
	if err != nil {
		rep := localapi.ErrorReply{Error: err.Error()}
		var cerr *control.Error
		if errors.As(err, &cerr) {
			rep.Code = string(cerr.Code)
		}
		writeJSON(w, http.StatusConflict, rep)
		return
	}
	out := localapi.ACL{Network: a.Network, Rules: make([]localapi.ACLRule, len(a.Rules))}
	for i, r := range a.Rules {
		out.Rules[i] = localapi.ACLRule(r)
	}
	writeJSON(w, http.StatusOK, out)
}
