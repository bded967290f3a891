package node

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/dns/dnsmessage"
)

// fakeHost is a host resolver with a fixed table; other names are not found, "slow.test" fails.
func fakeHost(table map[string][]netip.Addr) *hostResolver {
	return &hostResolver{ctx: context.Background(), log: hclog.NewNullLogger(), overlay: dnsOverlay,
		lookup: func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			if host == "slow.test" {
				return nil, context.DeadlineExceeded
			}
			if ips, ok := table[host]; ok {
				return ips, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}}
}

// TestHostDNS: names outside the warren zone are answered from the host's resolver, without the
// answers a page could use to reach the overlay or this host's loopback (DNS rebinding); warren names
// and reverse lookups stay the node's own; without a host resolver everything else is REFUSED.
func TestHostDNS(t *testing.T) {
	host := fakeHost(map[string][]netip.Addr{
		"web.test":    {netip.MustParseAddr("::ffff:192.0.2.7"), netip.MustParseAddr("2001:db8::7")},
		"rebind.test": {netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("fd7a:7761:7272::2"), netip.MustParseAddr("0.0.0.0")},
		"mixed.test":  {netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("198.51.100.1")},
		"v6only.test": {netip.MustParseAddr("2001:db8::6")},
		"many.test":   slices.Repeat([]netip.Addr{netip.MustParseAddr("2001:db8::1")}, 40),
	})
	for _, tt := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"web.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"192.0.2.7"}},
		{"web.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"2001:db8::7"}},
		{"rebind.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
		{"rebind.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"mixed.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"198.51.100.1"}},
		{"v6only.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil}, // no data, not NXDOMAIN
		{"gone.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"many.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, slices.Repeat([]string{"2001:db8::1"}, maxHostAnswers)},
		{"slow.test.", dnsmessage.TypeA, dnsmessage.RCodeServerFailure, nil},
		{"web.test.", dnsmessage.TypeMX, dnsmessage.RCodeRefused, nil},
		{"bob.warren.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.2"}},
		{"nobody.warren.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"7.2.0.192.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeRefused, nil},
	} {
		out := answerDNSWith(query(t, tt.name, tt.typ, false), testNames, host)
		var p dnsmessage.Parser
		h, err := p.Start(out)
		if err != nil {
			t.Fatalf("%s %v: %v", tt.name, tt.typ, err)
		}
		p.SkipAllQuestions()
		var got []string
		for {
			r, err := p.Answer()
			if err != nil {
				break
			}
			switch b := r.Body.(type) {
			case *dnsmessage.AResource:
				got = append(got, netip.AddrFrom4(b.A).String())
			case *dnsmessage.AAAAResource:
				got = append(got, netip.AddrFrom16(b.AAAA).String())
			}
		}
		if h.RCode != tt.rcode || !slices.Equal(got, tt.want) {
			t.Errorf("%s %v: %v %v, want %v %v", tt.name, tt.typ, h.RCode, got, tt.rcode, tt.want)
		}
		if h.Truncated {
			t.Errorf("%s %v: truncated", tt.name, tt.typ)
		}
		if tt.name == "web.test." && tt.rcode == dnsmessage.RCodeSuccess && (h.Authoritative || !h.RecursionAvailable) {
			t.Errorf("a host answer claims authority: %+v", h)
		}
	}
	// Without a host resolver (TUN mode, --overlay-only): REFUSED.
	var p dnsmessage.Parser
	if h, err := p.Start(answerDNS(query(t, "web.test.", dnsmessage.TypeA, false), testNames)); err != nil || h.RCode != dnsmessage.RCodeRefused {
		t.Errorf("web.test without a host resolver: %v %v", h.RCode, err)
	}
	if _, _, ok := host.answer(dnsmessage.Question{Name: dnsmessage.MustNewName("x.warren."), Type: dnsmessage.TypeA}); ok {
		t.Error("the host was asked for a warren name")
	}
}
