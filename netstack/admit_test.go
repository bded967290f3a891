package netstack

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestAdmit: B admits only what comes from A's IPv6 address. A's connections and datagrams from
// IPv4 are refused (TCP: "connection refused" at once, without dialing the host; UDP: dropped) and
// those from IPv6 are forwarded, datagrams larger than the MTU (reassembled first) included. Admit
// is told the sender's address and port and the local port.
func TestAdmit(t *testing.T) {
	tcpPort, udpPort := echoService(t), udpEcho(t)
	type call struct {
		proto  string
		remote netip.AddrPort
		port   uint16
	}
	var mu sync.Mutex
	var calls []call
	var dials int
	a, b, _, _ := newPair(t, pairConfig{exposed: []uint16{tcpPort}, b: Config{
		Admit: func(proto string, remote netip.AddrPort, port uint16) bool {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{proto, remote, port})
			return remote.Addr() == ipA6
		},
		DialLocal: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}})
	if err := b.ExposeUDP(udpPort); err != nil {
		t.Fatal(err)
	}
	last := func() (call, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			return call{}, dials
		}
		return calls[len(calls)-1], dials
	}

	// TCP.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(ipB4, tcpPort).String())
	if !errors.Is(err, ErrConnectionRefused) {
		t.Fatalf("dial from a refused address: %v, %v", c, err)
	}
	got, dialed := last()
	if got.proto != "tcp" || got.remote.Addr() != ipA4 || got.remote.Port() == 0 || got.port != tcpPort {
		t.Errorf("Admit asked %+v", got)
	}
	if dialed != 0 {
		t.Error("the host was dialed for a connection Admit refused")
	}
	if refused := b.Stats().ForwardsRefused; refused != 1 {
		t.Errorf("ForwardsRefused %d, want 1", refused)
	}
	c = dial(t, a, ipB6, tcpPort)
	if sum, n, err := exchange(c, []byte("hello")); err != nil || n != 5 || sum != sha256.Sum256([]byte("hello")) {
		t.Errorf("admitted connection: %d bytes, %v", n, err)
	}
	c.Close()

	// UDP, 2000 bytes: two fragments each way at the MTU of 1280 (udpEcho reads up to 2048).
	big := make([]byte, 2000)
	for _, c := range []struct {
		network  string
		src, dst netip.Addr
		admitted bool
	}{{"udp4", ipA4, ipB4, false}, {"udp6", ipA6, ipB6, true}} {
		pc, err := a.ListenUDP(c.network)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		refused := b.Stats().ForwardsRefused
		if _, err := pc.WriteTo(big, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.dst, udpPort))); err != nil {
			t.Fatal(err)
		}
		if !c.admitted {
			// Once b counts the refusal, no answer is coming: the short read only confirms it.
			testkit.Eventually(t, 30*time.Second, func() bool { return b.Stats().ForwardsRefused > refused }, "%s: the datagram was not refused", c.network)
			pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		} else {
			pc.SetReadDeadline(time.Now().Add(30 * time.Second))
		}
		n, _, err := pc.ReadFrom(make([]byte, 4000))
		if got, _ := last(); got.proto != "udp" || got.remote.Addr() != c.src || got.remote.Port() == 0 || got.port != udpPort {
			t.Errorf("%s: Admit asked %+v", c.network, got)
		}
		switch {
		case !c.admitted && err == nil:
			t.Errorf("a refused datagram was answered (%d bytes)", n)
		case c.admitted && (err != nil || n != len("echo:")+len(big)):
			t.Errorf("an admitted datagram over the MTU: %d bytes, %v", n, err)
		}
	}
	if refused := b.Stats().ForwardsRefused; refused != 2 {
		t.Errorf("ForwardsRefused %d, want 2", refused)
	}
}
