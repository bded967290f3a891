package node

// Names in TUN mode and inside `warren run`: the node answers DNS for NAME.warren, and the reverse
// names of overlay addresses, on a reserved overlay address of its own (dnsAddrs: the IPv4 pool's
// last address before its broadcast address, 100.127.255.254 by default, and the IPv6 pool's last
// address, fd7a:7761:7272:ffff:ffff:ffff:ffff:ffff). The coord never hands these out. A query that a
// device (the --tun device or an attached one) routes to that address never leaves the node: outputTUN
// answers it and writes the reply back into the same device (serveDNS), so only this host's own
// apps can ask, never a peer. UDP only: a TCP connection to the address is refused at once.
//
// What it answers, authoritatively: A and AAAA for PEER.warren and SELF.warren (the names in the
// route table; a name two peers claim resolves to neither, names.go), PTR for the reverse names of
// addresses inside the overlay prefixes, NXDOMAIN for other names in the warren zone and for
// overlay addresses of no node, and REFUSED for everything else, so a resolver that lists it next to
// others moves on. Replies are at most 512 bytes (longer ones are cut to the question with the TC
// bit); queries over 512 bytes or that are not a single question are not answered or get FORMERR.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/tun"
)

// DNS limits.
const (
	maxDNSMessage = 512 // the classic UDP limit, for queries and replies alike
	dnsTTL        = 10  // seconds: names move with `warren rename`
	dnsPort       = 53
)

// dnsAddrs returns the reserved DNS addresses of an overlay with pools p4 and p6: the address before
// p4's broadcast address and p6's last address (invalid addresses for invalid prefixes).
func dnsAddrs(p4, p6 netip.Prefix) (netip.Addr, netip.Addr) {
	return lastAddr(p4).Prev(), lastAddr(p6)
}

// lastAddr returns the last address of prefix p (of an IPv4 pool: its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// dnsNames is what the answerer looks names up in.
type dnsNames interface {
	// lookup returns the addresses of a node name (lower case, without .warren); nil if unknown.
	lookup(label string) []netip.Addr
	// reverse returns the name of the node that has ip.
	reverse(ip netip.Addr) (string, bool)
	// inOverlay reports whether ip lies in the overlay's prefixes.
	inOverlay(ip netip.Addr) bool
}

// answerDNS answers one DNS query (a UDP payload) as the file comment says; nil means no answer
// (too long, a response, or not even a header).
func answerDNS(query []byte, names dnsNames) []byte { return answerDNSWith(query, names, nil) }

// answerDNSWith is answerDNS that asks host, if not nil, for A and AAAA of names outside the
// warren zone instead of refusing them (dnshost.go).
func answerDNSWith(query []byte, names dnsNames, host hostLookup) []byte {
	if len(query) > maxDNSMessage {
		return nil
	}
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	reply := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	if h.OpCode != 0 {
		reply.RCode = dnsmessage.RCodeNotImplemented
		return buildDNS(reply, nil, nil, false)
	}
	q, err := p.Question()
	if err != nil {
		reply.RCode = dnsmessage.RCodeFormatError
		return buildDNS(reply, nil, nil, false)
	}
	if _, err := p.Question(); err != dnsmessage.ErrSectionDone {
		reply.RCode = dnsmessage.RCodeFormatError
		return buildDNS(reply, nil, nil, false)
	}
	edns := false
	if p.SkipAllAnswers() == nil && p.SkipAllAuthorities() == nil {
		for {
			ah, err := p.AdditionalHeader()
			if err != nil {
				break
			}
			if ah.Type == dnsmessage.TypeOPT {
				edns = true
			}
			if p.SkipAdditional() != nil {
				break
			}
		}
	}
	rcode, answers := resolveDNS(q, names)
	reply.Authoritative = rcode != dnsmessage.RCodeRefused
	if rcode == dnsmessage.RCodeRefused && host != nil {
		if rc, ans, ok := host.answer(q); ok {
			rcode, answers = rc, ans
			reply.Authoritative, reply.RecursionAvailable = false, true
		}
	}
	reply.RCode = rcode
	if out := buildDNS(reply, &q, answers, edns); len(out) <= maxDNSMessage {
		return out
	}
	reply.Truncated = true
	return buildDNS(reply, &q, nil, edns)
}

// dnsAnswer is one resource record of a reply.
type dnsAnswer struct {
	addr netip.Addr // A or AAAA
	ptr  string     // PTR, a fully qualified name
}

// resolveDNS decides the reply code and answers to question q.
func resolveDNS(q dnsmessage.Question, names dnsNames) (dnsmessage.RCode, []dnsAnswer) {
	if q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY {
		return dnsmessage.RCodeRefused, nil
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	if name == "warren" {
		return dnsmessage.RCodeSuccess, nil // the zone itself: no records of these types
	}
	if label, ok := strings.CutSuffix(name, ".warren"); ok {
		ips := names.lookup(label)
		if strings.Contains(label, ".") || len(ips) == 0 {
			return dnsmessage.RCodeNameError, nil
		}
		var answers []dnsAnswer
		for _, ip := range ips {
			if (ip.Is4() && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL)) ||
				(ip.Is6() && (q.Type == dnsmessage.TypeAAAA || q.Type == dnsmessage.TypeALL)) {
				answers = append(answers, dnsAnswer{addr: ip})
			}
		}
		return dnsmessage.RCodeSuccess, answers
	}
	ip, ok := reverseName(name)
	if !ok || !names.inOverlay(ip) {
		return dnsmessage.RCodeRefused, nil
	}
	peer, ok := names.reverse(ip)
	if !ok {
		return dnsmessage.RCodeNameError, nil
	}
	if q.Type != dnsmessage.TypePTR && q.Type != dnsmessage.TypeALL {
		return dnsmessage.RCodeSuccess, nil
	}
	return dnsmessage.RCodeSuccess, []dnsAnswer{{ptr: peer + ".warren."}}
}

// reverseName parses a full reverse name (lower case, no trailing dot): d.c.b.a.in-addr.arpa or
// 32 nibbles of ip6.arpa.
func reverseName(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var a [4]byte
		for i, l := range labels {
			v, err := strconv.Atoi(l)
			if err != nil || v < 0 || v > 255 || len(l) > 3 || l[0] == '+' {
				return netip.Addr{}, false
			}
			a[3-i] = byte(v)
		}
		return netip.AddrFrom4(a), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var hexits [32]byte
		for i := range 32 {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			hexits[31-i] = c
		}
		var a [16]byte
		if _, err := hex.Decode(a[:], hexits[:]); err != nil {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16(a), true
	}
	return netip.Addr{}, false
}

// buildDNS writes a reply: header, the question (if any), answers, and an OPT record (our UDP size,
// 512) if the query had one.
func buildDNS(h dnsmessage.Header, q *dnsmessage.Question, answers []dnsAnswer, edns bool) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, maxDNSMessage), h)
	b.EnableCompression()
	if q != nil {
		if b.StartQuestions() != nil || b.Question(*q) != nil {
			return nil
		}
		if b.StartAnswers() != nil {
			return nil
		}
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		for _, a := range answers {
			var err error
			switch {
			case a.ptr != "":
				var target dnsmessage.Name
				if target, err = dnsmessage.NewName(a.ptr); err == nil {
					err = b.PTRResource(rh, dnsmessage.PTRResource{PTR: target})
				}
			case a.addr.Is4():
				err = b.AResource(rh, dnsmessage.AResource{A: a.addr.As4()})
			default:
				err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.addr.As16()})
			}
			if err != nil {
				return nil
			}
		}
	}
	if edns {
		var rh dnsmessage.ResourceHeader
		if b.StartAdditionals() != nil || rh.SetEDNS0(maxDNSMessage, dnsmessage.RCodeSuccess, false) != nil ||
			b.OPTResource(rh, dnsmessage.OPTResource{}) != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// dnsView is the node's names as the answerer sees them: the route table's peers and the node itself.
type dnsView struct {
	rt      *routeTable
	self    string
	selfIPs []netip.Addr
	overlay overlay
}

func (v *dnsView) lookup(label string) []netip.Addr {
	if v.self != "" && label == strings.ToLower(v.self) {
		return v.selfIPs
	}
	ip4, ok := v.rt.byName[label]
	if !ok {
		return nil
	}
	return v.rt.ips[v.rt.owner[ip4]]
}

func (v *dnsView) reverse(ip netip.Addr) (string, bool) {
	for _, own := range v.selfIPs {
		if own == ip {
			return v.self, v.self != ""
		}
	}
	k, ok := v.rt.owner[ip]
	if !ok {
		return "", false
	}
	name := v.rt.names[k]
	if _, unique := v.rt.byName[strings.ToLower(name)]; !unique {
		return "", false // a name several peers claim is nobody's
	}
	return name, true
}

func (v *dnsView) inOverlay(ip netip.Addr) bool { return v.overlay.contains(ip) }

// names returns the node's current names for the DNS answerer.
func (n *Node) names() *dnsView {
	v := &dnsView{rt: n.routes.Load(), self: n.peers.selfName(), overlay: n.overlay}
	n.mu.Lock()
	if n.welcome != nil {
		v.selfIPs = []netip.Addr{n.welcome.IPv4, n.welcome.IPv6}
	}
	n.mu.Unlock()
	return v
}

// serveDNS answers a packet that device owner sent to a DNS address (see the file comment): a UDP
// query to port 53 gets its reply, a TCP segment a RST; everything else is dropped.
func (n *Node) serveDNS(b *tunBridge, owner uint8, p *packet.Packet, pkt []byte) {
	d := b.devs[owner].Load()
	if d == nil {
		return
	}
	var out []byte
	switch {
	case p.Proto == packet.ProtoTCP:
		out = packet.TCPReset(p, pkt)
	case p.Proto == packet.ProtoUDP && p.DPort == dnsPort && !p.Fragment && len(p.Transport) >= 8:
		end := int(binary.BigEndian.Uint16(p.Transport[4:]))
		if end < 8 || end > len(p.Transport) {
			return
		}
		ans := answerDNS(p.Transport[8:end], n.names())
		if len(ans) >= 4 && ans[3]&0x0f == byte(dnsmessage.RCodeRefused) && n.egressAllowed(owner) {
			n.serveHostDNS(d, pkt)
			return
		}
		if ans != nil {
			out = packet.UDPReply(p, ans)
		}
	}
	if out != nil {
		d.Write(out)
	}
}

// serveHostDNS answers a query the node refuses by itself, from a device with egress, with the
// host's resolver (dnshost.go), off the device's reader: the answer may take seconds.
func (n *Node) serveHostDNS(d *tun.Device, pkt []byte) {
	orig := bytes.Clone(pkt) // serveDNS checked it: a whole UDP datagram
	n.attached.goLookup(func() {
		q, ok := packet.Parse(orig)
		if !ok {
			return
		}
		end := int(binary.BigEndian.Uint16(q.Transport[4:]))
		if ans := answerDNSWith(q.Transport[8:end], n.names(), n.hostDNS()); ans != nil {
			if r := packet.UDPReply(&q, ans); r != nil {
				d.Write(r)
			}
		}
	})
}
