package netstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// egressDialer records what an egress stack asks to dial and dials a local service instead; the
// "internet" address refused is refused.
type egressDialer struct {
	tcp, udp uint16 // local ports standing in for every destination
	refused  string

	mu     sync.Mutex
	dialed []string
}

func (d *egressDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, network+" "+addr)
	d.mu.Unlock()
	if addr == d.refused {
		return nil, errors.New("not allowed")
	}
	port := d.tcp
	if network == "udp" {
		port = d.udp
	}
	return (&net.Dialer{}).DialContext(ctx, network, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
}

func (d *egressDialer) saw(s string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range d.dialed {
		if x == s {
			return true
		}
	}
	return false
}

// TestEgress: A (a client with default routes, like a `warren run` namespace) reaches arbitrary
// addresses through B, an egress stack: TCP connections and UDP flows are dialed with DialEgress to
// the very destination A asked for and spliced, replies come from that destination, and a refused
// dial is a reset.
func TestEgress(t *testing.T) {
	leakCheck(t)
	d := &egressDialer{tcp: echoService(t), udp: udpEcho(t), refused: "192.0.2.1:80"}
	a, b, _, _ := newPair(t, pairConfig{b: Config{DialEgress: d.dial}})

	// TCP, both families.
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:80"), netip.MustParseAddrPort("[2001:db8::7]:443")} {
		c := dial(t, a, dst.Addr(), dst.Port())
		msg, sum := randBytes(200 << 10)
		got, n, err := exchange(c, msg)
		c.Close()
		if err != nil || n != int64(len(msg)) || got != sum {
			t.Fatalf("echo through egress to %v: %d bytes, err %v", dst, n, err)
		}
		if !d.saw("tcp " + dst.String()) {
			t.Fatalf("egress did not dial %v: %v", dst, d.dialed)
		}
	}

	// A refused destination: connection refused, at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := a.DialContext(ctx, "tcp", "192.0.2.1:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial to a refused destination: %v, want connection refused", err)
	}

	// UDP: the reply comes from the destination.
	pc, err := a.ListenUDP("udp4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 9), Port: 53}
	buf := make([]byte, 100)
	testkit.Eventually(t, 10*time.Second, func() bool {
		pc.WriteTo([]byte("hi"), dst)
		pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, from, err := pc.ReadFrom(buf)
		return err == nil && bytes.Equal(buf[:n], []byte("echo:hi")) && from.String() == dst.String()
	}, "UDP echo through egress")
	if !d.saw("udp 198.51.100.9:53") {
		t.Fatalf("egress did not dial the UDP destination: %v", d.dialed)
	}
	if st := b.Stats(); st.EgressUDPFlows != 1 || st.ForwardsRefused != 1 {
		t.Fatalf("stats: %+v, want one UDP flow and one refusal", st)
	}
}
