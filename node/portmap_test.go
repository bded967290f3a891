package node

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// natPMPRouter is a NAT-PMP-only router on loopback for the node's tests (internal/portmap tests
// the protocols in depth): it answers PCP with Unsupported Version, and maps every port to 203.0.113.9
// at the same port. Each map request's lifetime goes to lifetimes.
func natPMPRouter(t *testing.T) (netip.AddrPort, chan uint32) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lifetimes := make(chan uint32, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 2 {
				continue
			}
			b := buf[:n]
			resp := []byte{0, 0x80 | b[1], 0, 0, 0, 0, 0, 1} // version, opcode, result, epoch
			switch {
			case b[0] != 0:
				resp[3] = 1 // Unsupported Version
			case b[1] == 0 && n == 2:
				resp = append(resp, 203, 0, 113, 9)
			case b[1] == 1 && n == 12:
				lifetime := binary.BigEndian.Uint32(b[8:])
				resp = append(resp, b[4], b[5], b[4], b[5], 0, 0, 0, 0)
				if lifetime == 0 {
					resp[10], resp[11] = 0, 0
				}
				binary.BigEndian.PutUint32(resp[12:], min(lifetime, 600))
				lifetimes <- lifetime
			default:
				continue
			}
			conn.WriteToUDPAddrPort(resp, from)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return netip.MustParseAddrPort(conn.LocalAddr().String()), lifetimes
}

// TestPortmapEndpoint: the router's mapping becomes the first candidate endpoint, ahead of the
// advertised ones, netcheck shows it, and closing the node deletes it on the router.
func TestPortmapEndpoint(t *testing.T) {
	router, lifetimes := natPMPRouter(t)
	adv := netip.MustParseAddrPort("198.51.100.7:9")
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:7400", Name: "n", Advertise: []netip.AddrPort{adv},
		Logger: testkit.Logger(t, "node")})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.portmapStatus(); got != "off" {
		t.Errorf("before mapping: %q, want off", got)
	}
	if got := n.extraEndpoints(); !slices.Equal(got, []netip.AddrPort{adv}) {
		t.Errorf("before mapping: extra endpoints %v", got)
	}
	n.mapPort(router, 41641)
	testkit.Eventually(t, 10*time.Second, func() bool { return n.portmapStatus() != "none" }, "no mapping")
	if got := n.portmapStatus(); got != "nat-pmp 203.0.113.9:41641" {
		t.Errorf("netcheck shows %q", got)
	}
	mapped := netip.MustParseAddrPort("203.0.113.9:41641")
	if got := n.extraEndpoints(); !slices.Equal(got, []netip.AddrPort{mapped, adv}) {
		t.Errorf("extra endpoints %v, want the mapping, then the advertised one", got)
	}
	if got := endpointList(netip.MustParseAddrPort("192.168.1.10:41641"), nil, n.extraEndpoints()); got[0] != mapped {
		t.Errorf("endpoints %v, want the mapping first", got)
	}
	if l := <-lifetimes; l != 7200 {
		t.Errorf("asked for %d s, want 7200", l)
	}
	n.reportEndpoints() // no NAT discovery and no coord yet: nothing to send, nothing breaks
	n.Close()
	// A request unanswered for 250 ms is sent again, so the router may have had the map request
	// twice, and may get the delete after Close gave up on its answer: the requests from here on are
	// more of the same 7200 s, then a delete.
	for deleted := false; !deleted; {
		select {
		case l := <-lifetimes:
			deleted = l == 0
			if l != 0 && l != 7200 {
				t.Errorf("on close: a map request for %d s, want a delete", l)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("closing the node did not delete the mapping")
		}
	}
}

// TestNoPortmap: without Config.Portmap (--no-portmap), with --no-direct, or with the socket on
// loopback, the node leaves the router alone.
func TestNoPortmap(t *testing.T) {
	for _, cfg := range []Config{{}, {Portmap: true, NoDirect: true}, {Portmap: true, Listen: "127.0.0.1:0"}} {
		cfg.StateDir, cfg.Coord, cfg.Name = t.TempDir(), "127.0.0.1:7400", "n"
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.startPortmap() // would need the UDP socket if it went on
		if got := n.portmapStatus(); got != "off" {
			t.Errorf("%+v: portmap %q", cfg, got)
		}
		n.Close()
	}
}
