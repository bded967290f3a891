package coord

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/warren-net/warren/control"
)

func addrPorts(ss ...string) []netip.AddrPort {
	out := make([]netip.AddrPort, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddrPort(s)
	}
	return out
}

// TestUnreachableEndpointsDropped (issue 13, item 8): a node's reported endpoints that no peer can
// reach it at — loopback, link-local, unspecified, "this network", reserved and broadcast, multicast,
// and the overlay's own addresses — are not passed on to peers, which would send probes at whatever
// listens there on their own host or network. Loopback stays when the coord sees the node on
// loopback too (node and coord on one host, as in tests), and then reaches only peers on loopback.
func TestUnreachableEndpointsDropped(t *testing.T) {
	srv := startServer(t)
	local := addrPorts("127.0.0.1:5", "[::1]:5", "169.254.1.1:5", "[fe80::1]:5", "0.0.0.0:5", "0.1.2.3:5",
		"255.255.255.255:5", "240.0.0.1:5", "224.0.0.1:5", "[ff02::1]:5", "[::]:5", "100.64.0.9:5",
		"[fd7a:7761:7272::9]:5", "[::ffff:127.0.0.1]:5", "192.168.1.10:5", "[2001:db8::1]:5", "10.0.0.1:5", "[fd00::1]:5")
	public := netip.MustParseAddrPort("203.0.113.7:1000")
	got := srv.candidateEndpoints(public, local)
	want := addrPorts("203.0.113.7:1000", "192.168.1.10:5", "[2001:db8::1]:5", "10.0.0.1:5", "[fd00::1]:5")
	if !slices.Equal(got, want) {
		t.Errorf("seen from %v: %v, want %v", public, got, want)
	}

	lo := netip.MustParseAddrPort("127.0.0.1:1000")
	got = srv.candidateEndpoints(lo, local)
	want = addrPorts("127.0.0.1:1000", "127.0.0.1:5", "[::1]:5", "192.168.1.10:5", "[2001:db8::1]:5", "10.0.0.1:5", "[fd00::1]:5")
	if !slices.Equal(got, want) {
		t.Errorf("seen on loopback: %v, want %v", got, want)
	}

	// A node on loopback keeps them only for peers on loopback.
	p := &control.Peer{Name: "x", Endpoints: got}
	if q := reachableBy(lo.Addr(), p); !slices.Equal(q.Endpoints, got) {
		t.Errorf("for a peer on loopback: %v", q.Endpoints)
	}
	q := reachableBy(public.Addr(), p)
	if want := addrPorts("192.168.1.10:5", "[2001:db8::1]:5", "10.0.0.1:5", "[fd00::1]:5"); !slices.Equal(q.Endpoints, want) {
		t.Errorf("for a remote peer: %v, want %v", q.Endpoints, want)
	}
	if !slices.Equal(p.Endpoints, got) {
		t.Error("reachableBy modified its argument")
	}
	if reachableBy(public.Addr(), nil) != nil {
		t.Error("a removal became something")
	}
}
