package node

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/warren-net/warren/socks"
)

// What the proxy may reach outside the overlay. Two ways in are closed here: a host name whose DNS
// answer points into the overlay (DNS rebinding: a web page's name resolving to a peer would let any
// page drive a proxied browser to overlay services), and the host's own addresses written with an
// IPv6 zone ("fe80::1%eth0" is fe80::1 on this host, and a zone makes it compare unequal).

// hostAnswer picks the address to dial for a host name that DNS resolved to ips. Answers inside the
// overlay are dropped: only overlay names (NAME.warren, from the peer map) lead into the overlay. If
// every answer is in the overlay, the name is refused with socks.ErrNotAllowed.
func hostAnswer(name string, ips []netip.Addr, overlay []netip.Prefix) (netip.Addr, error) {
	for _, ip := range ips {
		ip = ip.Unmap()
		if !inPrefixes(ip, overlay) {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %q resolves into the overlay (%v); only NAME.warren names lead there", socks.ErrNotAllowed, name, ips[0].Unmap())
}

// inPrefixes reports whether ip, without any zone, lies in one of prefixes.
func inPrefixes(ip netip.Addr, prefixes []netip.Prefix) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// hostAddrIn reports whether ip reaches this host, given the host's interface addresses: loopback,
// unspecified, or one of addrs. Zones are ignored: the host's address on any interface is the host.
func hostAddrIn(ip netip.Addr, addrs []net.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap().WithZone("") == ip {
			return true
		}
	}
	return false
}
