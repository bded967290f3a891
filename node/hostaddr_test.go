package node

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/warren-net/warren/socks"
)

var testOverlay = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:7761:7272::/48")}

// DNS rebinding: a name that is not an overlay name but whose DNS answer points into the overlay
// must not lead there (a web page could otherwise drive a proxied browser to a peer's services).
func TestHostAnswerRefusesOverlay(t *testing.T) {
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ips  []netip.Addr
		want string // "" = refused
	}{
		{"public", addrs("93.184.216.34"), "93.184.216.34"},
		{"rebound v4", addrs("100.64.0.2"), ""},
		{"rebound v4-mapped", addrs("::ffff:100.64.0.2"), ""},
		{"rebound v6", addrs("fd7a:7761:7272::2"), ""},
		{"rebound v6 with a zone", addrs("fd7a:7761:7272::2%eth0"), ""},
		{"overlay first, public next", addrs("100.64.0.2", "93.184.216.34"), "93.184.216.34"},
		{"outside the node's pool", addrs("100.128.0.1"), "100.128.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hostAnswer("evil.example", tc.ips, testOverlay)
			if tc.want == "" {
				if !errors.Is(err, socks.ErrNotAllowed) {
					t.Fatalf("got %v, %v; want ErrNotAllowed", got, err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// --allow-local cannot be bypassed by writing one of the host's addresses with an IPv6 zone: a
// service on [::] answers on fe80::x%eth0 as well as on ::1.
func TestHostAddrIgnoresZones(t *testing.T) {
	ifaddrs := []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("fe80::1c2b:3cff:fe4d:5e6f"), Mask: net.CIDRMask(64, 128)},
		&net.IPNet{IP: net.ParseIP("192.0.2.10"), Mask: net.CIDRMask(24, 32)},
	}
	for _, tc := range []struct {
		ip   string
		host bool
	}{
		{"127.0.0.1", true},
		{"::1", true},
		{"::", true},
		{"::ffff:192.0.2.10", true},
		{"fe80::1c2b:3cff:fe4d:5e6f", true},
		{"fe80::1c2b:3cff:fe4d:5e6f%eth0", true},
		{"fe80::1c2b:3cff:fe4d:5e6f%1", true},
		{"fe80::1%eth0", false}, // a neighbour on the LAN, not this host
		{"192.0.2.11", false},
	} {
		if got := hostAddrIn(netip.MustParseAddr(tc.ip), ifaddrs); got != tc.host {
			t.Errorf("hostAddrIn(%s) = %v, want %v", tc.ip, got, tc.host)
		}
	}
}

// The same with this machine's real interfaces: each of its link-local addresses, written with the
// interface's zone, is this host.
func TestIsHostAddrRealZones(t *testing.T) {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().IsLinkLocalUnicast() || !p.Addr().Is6() {
				continue
			}
			zoned := p.Addr().WithZone(ifc.Name)
			if !isHostAddr(zoned) {
				t.Errorf("isHostAddr(%v) = false: a zone hides this host's own address", zoned)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Skip("this machine has no IPv6 link-local address to check (TestHostAddrIgnoresZones covers the logic)")
	}
}
