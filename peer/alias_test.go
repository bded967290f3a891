package peer

import (
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
)

// TestAliasRedirects: packets for an aliased address go to its alias, whatever the socket under the
// aliasConn; removing the alias sends them where they were addressed again. Over a UDP socket the
// transport's conn keeps quic-go's fast-path methods.
func TestAliasRedirects(t *testing.T) {
	n := testNet(t)
	self, old, moved := n.MustListen("10.0.0.1:1"), n.MustListen("10.0.0.2:2"), n.MustListen("10.0.0.3:3")
	for _, c := range []net.PacketConn{self, old, moved} {
		defer c.Close()
	}
	a, tc := newAliasConn(self)
	if tc != net.PacketConn(a) {
		t.Fatal("over a non-UDP conn the transport does not get the aliasConn")
	}
	buf := make([]byte, 16)
	expect := func(c net.PacketConn, what string) {
		t.Helper()
		nr, _, err := c.ReadFrom(buf)
		if err != nil || string(buf[:nr]) != what {
			t.Fatalf("read %q, %v; want %q", buf[:nr], err, what)
		}
	}
	to := net.UDPAddrFromAddrPort(old.AddrPort())
	tc.WriteTo([]byte("plain"), to)
	expect(old, "plain")
	a.setAlias(old.AddrPort(), moved.AddrPort())
	if got := a.target(old.AddrPort()); got != moved.AddrPort() {
		t.Fatalf("target %v, want %v", got, moved.AddrPort())
	}
	tc.WriteTo([]byte("aliased"), to)
	expect(moved, "aliased")
	a.setAlias(old.AddrPort(), netip.AddrPort{})
	tc.WriteTo([]byte("back"), to)
	expect(old, "back")

	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, tc := newAliasConn(uc); tc == nil {
		t.Fatal("no transport conn")
	} else if _, ok := tc.(quic.OOBCapablePacketConn); !ok {
		t.Fatal("over a UDP socket the transport's conn lost quic-go's fast paths")
	}
}

// floodBatch is a socket under a flood: every read fills all the messages at once.
type floodBatch struct{}

func (floodBatch) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	for i := range ms {
		ms[i].N = 1
	}
	return len(ms), nil
}

// TestReadBatchYields: under a flood the transport's reads never block, and on one P the goroutines
// they wake (quic-go's connection, which must drain its queue of 256 datagrams) would not run until
// they do. ReadBatch lets them run well before that queue is full.
func TestReadBatchYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := &udpAliasConn{batch: floodBatch{}}
	ms := make([]ipv4.Message, 8)
	for round := range 3 {
		var ran atomic.Bool
		go ran.Store(true) // runnable from here on, on the one P this goroutine holds
		handed := 0
		for !ran.Load() {
			n, err := c.ReadBatch(ms, 0)
			if err != nil {
				t.Fatal(err)
			}
			handed += n
			if handed > 256-len(ms) {
				t.Fatalf("round %d: %d datagrams handed over and a runnable goroutine has not run", round, handed)
			}
		}
	}
}
