package node

// Access rules (ACLs) are enforced here, at the receiving node. The coord sends the rule list of
// every network this node is in that has one (control.ACL); on every change of the peer map or the
// rules, buildRoutes (route.go) works out per peer what it may reach on this node (an acl.Grant) and puts it in
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
// split so that its first fragment ends before the flags, a header chain longer than packet.Parse
// walks), and non-first fragments, which carry no transport header, must pass filterACL (large UDP
// datagrams fragment at the overlay MTU). filterACL stays as the cheap early drop, and refuses what
// it cannot read from a peer under rules. ICMP echo is answered inside gVisor's IP layer, where no
// hook exists, so for it filterACL is the only check; it suffices: the ICMP type is in the first 8
// bytes of the message, which only a first fragment carries (later ones start at offset 8 or more,
// and gVisor, like Linux, discards a datagram whose fragments overlap), and a first fragment cut
// shorter does not parse. In TUN mode the kernel reassembles; tunBridge.verdict admits only packets it can
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
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// allows reports whether peer from may open proto/port on this node under the access rules. A key
// that is not a peer in the table (removed a moment ago, its stream already read) may open nothing,
// rules or not, as the packet path refuses an address no peer owns.
func (rt *routeTable) allows(from peer.Key, proto acl.Proto, port uint16) bool {
	if !rt.peers[from] {
		return false
	}
	g, restricted := rt.grants[from]
	return !restricted || g.Allows(proto, port)
}

// aclAdmits applies the access rules to a packet from peer `from` to this node: TCP SYNs, UDP to
// exposed ports and ICMP echo requests need a grant; everything else passes, non-first fragments
// too (the forwarders judge the reassembled datagram; see the file comment).
func (n *Node) aclAdmits(rt *routeTable, from peer.Key, p *packet.Packet) bool {
	g, restricted := rt.grants[from]
	if !restricted || p.Fragment {
		return true
	}
	switch p.Proto {
	case packet.ProtoTCP:
		if len(p.Transport) < 14 {
			return false // a first fragment that ends before the flags: no honest sender cuts a TCP header
		}
		// A connection request is what gVisor's forwarder takes for one: SYN without ACK (with RST
		// or FIN too).
		return p.TCPFlags&(packet.TCPSYN|packet.TCPACK) != packet.TCPSYN || g.Allows(acl.TCP, p.DPort)
	case packet.ProtoUDP:
		return !n.exposed[Port{"udp", p.DPort}] || g.Allows(acl.UDP, p.DPort)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		return !p.ICMPEcho || p.ICMPReply || g.Allows(acl.ICMP, 0)
	}
	return true
}

// filterACL is the packet path's check (proxy and TUN mode alike): it reports whether pkt from peer
// `from` may go on, and answers a refused TCP SYN with a RST.
func (n *Node) filterACL(rt *routeTable, from peer.Key, pkt []byte) bool {
	if _, restricted := rt.grants[from]; !restricted {
		return true
	}
	p, ok := packet.Parse(pkt)
	if !ok {
		// Truncated, or more IPv6 extension headers than packet.Parse walks: gVisor may still read
		// it, so it is refused rather than waved through.
		n.aclRefused(from, 0, 0)
		return false
	}
	if n.aclAdmits(rt, from, &p) {
		return true
	}
	n.aclRefused(from, p.Proto, p.DPort)
	if rst := packet.TCPReset(&p, pkt); rst != nil {
		n.sendq.send(from, rst, false)
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
		p, num := acl.TCP, uint8(packet.ProtoTCP)
		if proto == "udp" {
			p, num = acl.UDP, packet.ProtoUDP
		}
		from, ok := rt.owner[remote.Addr()]
		if ok && rt.allows(from, p, port) || !ok && slices.Contains(self, remote.Addr()) {
			return true
		}
		n.aclRefused(from, num, port)
		return false
	}
}

// protoTCP is packet.ProtoTCP, for the stream path's refusals (stream.go).
const protoTCP = packet.ProtoTCP

// aclLogEvery bounds the debug lines about refused packets.
const aclLogEvery = time.Second

// aclRefused counts a refusal and logs it at debug level, at most once per aclLogEvery (with the
// number of refusals not logged), so a flood costs no allocation.
func (n *Node) aclRefused(from peer.Key, proto uint8, port uint16) {
	n.drops.acl.Add(1)
	if !n.log.IsDebug() {
		return
	}
	if quiet, ok := n.aclLog.due(aclLogEvery); ok {
		n.log.Debug("access rules refused a connection or packet", "peer", n.who(from), "proto", proto, "port", port,
			"refused_unlogged", quiet)
	}
}

// logLimiter lets a line be logged at most once per interval, counting the ones it holds back.
// The zero value is ready; safe for concurrent use without locks.
type logLimiter struct {
	at    atomic.Int64  // unix nanoseconds of the last line let through
	quiet atomic.Uint64 // lines held back since
}

// due reports whether a line may be logged now, and how many were held back before it.
func (l *logLimiter) due(every time.Duration) (quiet uint64, ok bool) {
	now := time.Now().UnixNano()
	last := l.at.Load()
	if now-last < int64(every) || !l.at.CompareAndSwap(last, now) {
		l.quiet.Add(1)
		return 0, false
	}
	return l.quiet.Swap(0), true
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
