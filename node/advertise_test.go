package node

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/warren-net/warren/control"
)

// TestEndpointList: advertised endpoints come first, then the socket's own address or, for a
// socket on the unspecified address, the interfaces' (no link-local, no duplicates), capped so
// that the coord's observed address still fits.
func TestEndpointList(t *testing.T) {
	adv := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:41641"), netip.MustParseAddrPort("[::ffff:198.51.100.7]:9")}
	got := endpointList(netip.MustParseAddrPort("192.168.1.10:7000"), nil, adv)
	want := []netip.AddrPort{adv[0], netip.MustParseAddrPort("198.51.100.7:9"), netip.MustParseAddrPort("192.168.1.10:7000")}
	if !slices.Equal(got, want) {
		t.Errorf("bound socket: %v, want %v", got, want)
	}
	ifaces := []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("203.0.113.5"),
		netip.MustParseAddr("2001:db8::2")}
	got = endpointList(netip.MustParseAddrPort("[::]:41641"), ifaces, adv[:1])
	want = []netip.AddrPort{adv[0], netip.MustParseAddrPort("192.168.1.10:41641"), netip.MustParseAddrPort("[2001:db8::2]:41641")}
	if !slices.Equal(got, want) {
		t.Errorf("unspecified socket: %v, want %v", got, want)
	}
	var many []netip.Addr
	for i := range 40 {
		many = append(many, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}))
	}
	got = endpointList(netip.MustParseAddrPort("0.0.0.0:1"), many, adv)
	if len(got) != control.MaxEndpoints-1 || got[0] != adv[0] {
		t.Errorf("many interfaces: %d endpoints starting %v, want %d starting with the advertised one", len(got), got[0], control.MaxEndpoints-1)
	}
}

// TestNewRefusesBadAdvertise: node.New checks Config.Advertise as the command line does.
func TestNewRefusesBadAdvertise(t *testing.T) {
	for _, bad := range []string{"127.0.0.1:1", "0.0.0.0:1", "203.0.113.5:0", "[ff02::1]:1"} {
		_, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:7400", Name: "n", Advertise: []netip.AddrPort{netip.MustParseAddrPort(bad)}})
		if err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:7400", Name: "n", Advertise: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:1")}})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
}
