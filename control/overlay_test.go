package control

import (
	"net/netip"
	"strings"
	"testing"
)

// A coord that announces overlay prefixes or peer addresses outside the fixed ranges would make the
// node send traffic for those addresses (a public resolver, the LAN) into the overlay, or route them
// to its TUN device. The node refuses such messages.
func TestOverlayRangeEnforced(t *testing.T) {
	welcome := func(p4, ip4, p6, ip6 string) *Msg {
		return &Msg{Type: TypeWelcome, Welcome: &Welcome{
			IPv4: netip.MustParseAddr(ip4), Prefix4: netip.MustParsePrefix(p4),
			IPv6: netip.MustParseAddr(ip6), Prefix6: netip.MustParsePrefix(p6)}}
	}
	peer := func(ips ...string) *Msg {
		p := Peer{Key: make([]byte, 32), Name: "bob"}
		for _, s := range ips {
			p.IPs = append(p.IPs, netip.MustParseAddr(s))
		}
		return &Msg{Type: TypePeerMap, PeerMap: &PeerMap{Peers: []Peer{p}}}
	}
	for _, tc := range []struct {
		name string
		msg  *Msg
		want string // "" = accepted
	}{
		{"default pools", welcome("100.64.0.0/10", "100.64.0.1", "fd7a:7761:7272::/48", "fd7a:7761:7272::1"), ""},
		{"small pools", welcome("100.100.0.0/24", "100.100.0.7", "fd00::/120", "fd00::7"), ""},
		{"public v4 pool", welcome("1.1.1.0/24", "1.1.1.2", "fd7a:7761:7272::/48", "fd7a:7761:7272::1"), "not inside"},
		{"private v4 pool", welcome("192.168.1.0/24", "192.168.1.2", "fd7a:7761:7272::/48", "fd7a:7761:7272::1"), "not inside"},
		{"pool wider than the range", welcome("64.0.0.0/2", "100.64.0.1", "fd7a:7761:7272::/48", "fd7a:7761:7272::1"), "not inside"},
		{"public v6 pool", welcome("100.64.0.0/10", "100.64.0.1", "2001:db8::/32", "2001:db8::1"), "not inside"},
		{"v6 pool wider than fc00::/7", welcome("100.64.0.0/10", "100.64.0.1", "::/0", "fd00::1"), "not inside"},
		{"address outside its pool", welcome("100.64.0.0/24", "100.65.0.1", "fd7a:7761:7272::/48", "fd7a:7761:7272::1"), "not inside the overlay prefixes"},
		{"peer in range", peer("100.64.0.2", "fd7a:7761:7272::2"), ""},
		{"peer with a public address", peer("100.64.0.2", "8.8.8.8"), "outside the overlay"},
		{"peer with a global v6 address", peer("2606:4700::1111"), "outside the overlay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.msg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
