package node

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/packet/packettest"
	"github.com/warren-net/warren/peer"
)

// fakeNames is a dnsNames with bob (both families), a long-named peer and self alice.
type fakeNames map[string][]netip.Addr

func (f fakeNames) lookup(label string) []netip.Addr { return f[label] }
func (f fakeNames) reverse(ip netip.Addr) (string, bool) {
	for name, ips := range f {
		for _, a := range ips {
			if a == ip {
				return name, true
			}
		}
	}
	return "", false
}
func (f fakeNames) inOverlay(ip netip.Addr) bool { return dnsOverlay.contains(ip) }

var dnsOverlay = overlay{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")}

var testNames = fakeNames{
	"bob":                   {netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a:7761:7272::2")},
	"alice":                 {netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:7761:7272::1")},
	strings.Repeat("x", 63): {netip.MustParseAddr("100.64.0.9")},
}

func query(t testing.TB, name string, typ dnsmessage.Type, edns bool) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if edns {
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(4096, dnsmessage.RCodeSuccess, false)
		b.StartAdditionals()
		b.OPTResource(rh, dnsmessage.OPTResource{})
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAnswerDNS(t *testing.T) {
	tests := []struct {
		name  string
		qname string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string // answers: addresses or PTR targets
	}{
		{"peer A", "bob.warren.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.2"}},
		{"peer AAAA", "bob.warren.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"fd7a:7761:7272::2"}},
		{"peer ANY", "bob.warren.", dnsmessage.TypeALL, dnsmessage.RCodeSuccess, []string{"100.64.0.2", "fd7a:7761:7272::2"}},
		{"case-insensitive, 0x20 kept", "BoB.WaRReN.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.2"}},
		{"self", "alice.warren.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.1"}},
		{"peer MX: no data", "bob.warren.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"v4-only peer AAAA: no data", strings.Repeat("x", 63) + ".warren.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"unknown peer", "carol.warren.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"deeper name", "www.bob.warren.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"zone apex", "warren.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
		{"internet name", "example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"suffix lookalike", "bobwarren.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"PTR v4", "2.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeSuccess, []string{"bob.warren."}},
		{"PTR v6", "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.7.2.7.1.6.7.7.a.7.d.f.ip6.arpa.", dnsmessage.TypePTR,
			dnsmessage.RCodeSuccess, []string{"bob.warren."}},
		{"PTR of nobody in the overlay", "3.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeNameError, nil},
		{"PTR outside the overlay", "1.1.168.192.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeRefused, nil},
		{"PTR partial", "64.100.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeRefused, nil},
		{"PTR bad octet", "2.0.64.300.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeRefused, nil},
	}
	for _, tt := range tests {
		for _, edns := range []bool{false, true} {
			out := answerDNS(query(t, tt.qname, tt.typ, edns), testNames)
			var p dnsmessage.Parser
			h, err := p.Start(out)
			if err != nil {
				t.Fatalf("%s: reply does not parse: %v", tt.name, err)
			}
			if h.ID != 0x1234 || !h.Response || !h.RecursionDesired || h.RecursionAvailable || h.RCode != tt.rcode || h.Truncated {
				t.Errorf("%s: header %+v, want rcode %v", tt.name, h, tt.rcode)
			}
			qs, _ := p.AllQuestions()
			if len(qs) != 1 || qs[0].Name.String() != tt.qname {
				t.Errorf("%s: question %v", tt.name, qs)
			}
			rrs, err := p.AllAnswers()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, rr := range rrs {
				if rr.Header.Name.String() != tt.qname || rr.Header.TTL != dnsTTL {
					t.Errorf("%s: answer header %+v", tt.name, rr.Header)
				}
				switch b := rr.Body.(type) {
				case *dnsmessage.AResource:
					got = append(got, netip.AddrFrom4(b.A).String())
				case *dnsmessage.AAAAResource:
					got = append(got, netip.AddrFrom16(b.AAAA).String())
				case *dnsmessage.PTRResource:
					got = append(got, b.PTR.String())
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("%s: answers %v, want %v", tt.name, got, tt.want)
			}
			p.SkipAllAuthorities()
			extra, _ := p.AllAdditionals()
			if hasOPT := len(extra) == 1 && extra[0].Header.Type == dnsmessage.TypeOPT; hasOPT != edns {
				t.Errorf("%s: EDNS query %v, reply additionals %v", tt.name, edns, extra)
			}
			if len(out) > maxDNSMessage {
				t.Errorf("%s: reply of %d bytes", tt.name, len(out))
			}
		}
	}
}

func TestAnswerDNSMalformed(t *testing.T) {
	good := query(t, "bob.warren.", dnsmessage.TypeA, false)
	// Not answered at all: garbage, a response, too long.
	response := append([]byte(nil), good...)
	response[2] |= 0x80
	for name, q := range map[string][]byte{
		"empty": nil, "short header": good[:5], "response": response,
		"over 512 bytes": append(append([]byte(nil), good...), make([]byte, 512)...),
	} {
		if out := answerDNS(q, testNames); out != nil {
			t.Errorf("%s: answered %x", name, out)
		}
	}
	rcodeOf := func(out []byte) dnsmessage.RCode {
		var p dnsmessage.Parser
		h, err := p.Start(out)
		if err != nil {
			t.Fatalf("reply does not parse: %v (%x)", err, out)
		}
		return h.RCode
	}
	// Cut inside the question, two questions, another opcode.
	if rc := rcodeOf(answerDNS(good[:len(good)-3], testNames)); rc != dnsmessage.RCodeFormatError {
		t.Errorf("cut question: %v", rc)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("bob.warren."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("alice.warren."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	two, _ := b.Finish()
	if rc := rcodeOf(answerDNS(two, testNames)); rc != dnsmessage.RCodeFormatError {
		t.Errorf("two questions: %v", rc)
	}
	update := append([]byte(nil), good...)
	update[2] |= 5 << 3 // opcode UPDATE
	if rc := rcodeOf(answerDNS(update, testNames)); rc != dnsmessage.RCodeNotImplemented {
		t.Errorf("UPDATE: %v", rc)
	}
}

// TestAnswerDNSTruncated: a reply over 512 bytes is cut to its question with the TC bit.
func TestAnswerDNSTruncated(t *testing.T) {
	many := fakeNames{"bob": nil}
	for i := range 40 {
		many["bob"] = append(many["bob"], netip.AddrFrom16([16]byte{0xfd, 0x7a, 15: byte(i)}))
	}
	out := answerDNS(query(t, "bob.warren.", dnsmessage.TypeAAAA, true), many)
	var p dnsmessage.Parser
	h, err := p.Start(out)
	if err != nil || !h.Truncated || len(out) > maxDNSMessage {
		t.Fatalf("header %+v, %d bytes: %v", h, len(out), err)
	}
	p.SkipAllQuestions()
	if rrs, _ := p.AllAnswers(); len(rrs) != 0 {
		t.Errorf("truncated reply carries %d answers", len(rrs))
	}
}

// TestServeDNSPacket: a query packet to the DNS address comes back as a reply packet from it, with
// valid checksums, to the asking port.
func TestServeDNSPacket(t *testing.T) {
	dns4, dns6 := dnsAddrs(dnsOverlay[0], dnsOverlay[1])
	if dns4.String() != "100.127.255.254" || dns6.String() != "fd7a:7761:7272:ffff:ffff:ffff:ffff:ffff" {
		t.Fatalf("DNS addresses %v %v", dns4, dns6)
	}
	for _, src := range []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:7761:7272::1")} {
		dst := dns4
		if src.Is6() {
			dst = dns6
		}
		q := query(t, "bob.warren.", dnsmessage.TypeA, false)
		u := packettest.UDP(40000, 53)
		binary.BigEndian.PutUint16(u[4:], uint16(8+len(q)))
		p, ok := packet.Parse(packettest.IP(src, dst, packet.ProtoUDP, append(u, q...)))
		if !ok {
			t.Fatal("query packet does not parse")
		}
		ans := answerDNS(p.Transport[8:], testNames)
		r, ok := packet.Parse(packet.UDPReply(&p, ans))
		if !ok || r.Src != dst || r.Dst != src || r.SPort != 53 || r.DPort != 40000 || string(r.Transport[8:]) != string(ans) {
			t.Fatalf("reply %+v", r)
		}
		// The checksum over the pseudo header and the datagram adds up to 0xffff.
		pseudo := append(append(dst.AsSlice(), src.AsSlice()...), 0, packet.ProtoUDP, 0, byte(len(r.Transport)))
		if src.Is6() {
			pseudo = append(append(dst.AsSlice(), src.AsSlice()...), 0, 0, 0, byte(len(r.Transport)), 0, 0, 0, packet.ProtoUDP)
		}
		if sum := packet.Checksum(packet.Checksum(0, pseudo), r.Transport); sum != 0xffff {
			t.Errorf("reply to %v: checksum adds up to %#x", src, sum)
		}
	}
}

func FuzzAnswerDNS(f *testing.F) {
	f.Add(query(f, "bob.warren.", dnsmessage.TypeA, false))
	f.Add(query(f, "bob.warren.", dnsmessage.TypeALL, true))
	f.Add(query(f, "2.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, false))
	f.Add(query(f, "example.com.", dnsmessage.TypeA, true))
	f.Fuzz(func(t *testing.T, q []byte) {
		out := answerDNS(q, testNames)
		if out == nil {
			return
		}
		if len(out) > maxDNSMessage {
			t.Fatalf("reply of %d bytes", len(out))
		}
		var p dnsmessage.Parser
		h, err := p.Start(out)
		if err != nil || !h.Response {
			t.Fatalf("reply %x does not parse as a response: %v", out, err)
		}
	})
}

// TestNodeNames: the node's own view for the answerer: peers by name (any case) with all their
// addresses, itself from the welcome, reverse lookups; a name two peers claim resolves to neither,
// either way.
func TestNodeNames(t *testing.T) {
	n, _, _ := testNode(t)
	n.welcome = &control.Welcome{IPv4: netip.MustParseAddr("100.64.0.1"), IPv6: netip.MustParseAddr("fd7a::1")}
	n.overlay = overlay{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a::/48")}
	kd, ke := peer.Key{3}, peer.Key{4}
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{Upsert: []control.Peer{
		{Key: kd[:], Name: "twin", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}},
		{Key: ke[:], Name: "Twin", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.5")}},
	}}})
	v := n.names()
	if got := v.lookup("b"); len(got) != 2 || got[0].String() != "100.64.0.2" || got[1].String() != "fd7a::2" {
		t.Errorf("b → %v", got)
	}
	if got := v.lookup("me"); len(got) != 2 || got[0].String() != "100.64.0.1" {
		t.Errorf("me → %v", got)
	}
	for _, c := range []struct {
		ip   string
		name string
		ok   bool
	}{{"100.64.0.2", "B", true}, {"fd7a::2", "B", true}, {"100.64.0.1", "me", true}, {"fd7a::1", "me", true},
		{"100.64.0.4", "", false}, {"100.64.0.9", "", false}} {
		if name, ok := v.reverse(netip.MustParseAddr(c.ip)); name != c.name || ok != c.ok {
			t.Errorf("reverse %s → %q %v", c.ip, name, ok)
		}
	}
	if got := v.lookup("twin"); got != nil {
		t.Errorf("twin (claimed twice) → %v", got)
	}
	if !v.inOverlay(netip.MustParseAddr("100.100.0.1")) || v.inOverlay(netip.MustParseAddr("10.0.0.1")) {
		t.Error("inOverlay")
	}
}
