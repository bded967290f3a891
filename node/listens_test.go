package node

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/packet"
)

// TestExposedOwner: a new flow to an exposed port goes to the netstack when the service listens only
// on loopback, to the kernel when something holds the port on the overlay address or the probe
// fails; flows already tracked keep their owner.
func TestExposedOwner(t *testing.T) {
	n, b := testBridge()
	held := map[probeKey]bool{{packet.ProtoTCP, self4, 22}: true} // tcp:22 on the overlay address; udp:27015 nowhere
	failing := probeKey{packet.ProtoTCP, self6, 22}
	b.loopbackOnly = (&listenProbe{now: time.Now, cache: map[probeKey]probeResult{},
		inUse: func(proto uint8, addr netip.Addr, port uint16) (bool, error) {
			if (probeKey{proto, addr, port}) == failing {
				return false, errors.New("EACCES")
			}
			return held[probeKey{proto, addr, port}], nil
		}}).loopbackOnly
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint8
	}{
		{"SYN, service on the overlay address", ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), ownerTUN},
		{"SYN over IPv6, probe fails", ipPacket(peer6, self6, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, "")), ownerTUN},
		{"UDP, service on loopback", ipPacket(peer4, self4, packet.ProtoUDP, udpDgram(1, 27015)), ownerStack},
		{"UDP broadcast, service on loopback", ipPacket(peer4, bcast4, packet.ProtoUDP, udpDgram(1, 27015)), ownerStack},
		{"UDP to unexposed port", ipPacket(peer4, self4, packet.ProtoUDP, udpDgram(1, 27016)), 0},
	} {
		p, _ := packet.Parse(c.pkt)
		if got := b.verdict(&p, n.exposed, n.overlay); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

// TestListenProbeCache: answers are reused for a second, then asked again.
func TestListenProbeCache(t *testing.T) {
	now := time.Unix(1000, 0)
	asked := 0
	l := &listenProbe{now: func() time.Time { return now }, cache: map[probeKey]probeResult{},
		inUse: func(uint8, netip.Addr, uint16) (bool, error) { asked++; return asked > 1, nil }}
	if !l.loopbackOnly(packet.ProtoTCP, self4, 80) || !l.loopbackOnly(packet.ProtoTCP, self4, 80) || asked != 1 {
		t.Fatalf("first answers: asked %d times", asked)
	}
	now = now.Add(probeTTL)
	if l.loopbackOnly(packet.ProtoTCP, self4, 80) || asked != 2 {
		t.Fatalf("after a second: asked %d times", asked)
	}
}

// TestPortInUse probes real sockets: a listener on 127.0.0.1 holds its port there but not on
// 127.0.0.2; one on the wildcard address holds it everywhere; a UDP socket likewise.
func TestPortInUse(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the probe is Linux only")
	}
	lo, lo2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if in, err := portInUse(packet.ProtoTCP, lo, port); !in || err != nil {
		t.Errorf("TCP on 127.0.0.1: %v %v", in, err)
	}
	if in, err := portInUse(packet.ProtoTCP, lo2, port); in || err != nil {
		t.Errorf("TCP on 127.0.0.2 (listener on 127.0.0.1 only): %v %v", in, err)
	}
	wild, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	if in, err := portInUse(packet.ProtoTCP, lo2, uint16(wild.Addr().(*net.TCPAddr).Port)); !in || err != nil {
		t.Errorf("TCP wildcard: %v %v", in, err)
	}
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uport := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	if in, err := portInUse(packet.ProtoUDP, lo, uport); !in || err != nil {
		t.Errorf("UDP on 127.0.0.1: %v %v", in, err)
	}
	if in, err := portInUse(packet.ProtoUDP, lo2, uport); in || err != nil {
		t.Errorf("UDP on 127.0.0.2: %v %v", in, err)
	}
	// IPv6: free on ::1 (the IPv4 listener does not hold it there).
	if in, err := portInUse(packet.ProtoTCP, netip.IPv6Loopback(), port); in || err != nil {
		t.Logf("TCP on ::1: %v %v (no IPv6 here?)", in, err)
	}
}
