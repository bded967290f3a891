package node

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/socks"
)

// A udpRouter over two plain sockets standing in for the netstack's (127.0.0.0/8 as the overlay):
// datagrams queued before PushTo and those after reach the handler with the headroom before them,
// and a write allocates nothing (the sockets take the destination as a value).
func TestUDPRouterPushes(t *testing.T) {
	listen := func() net.PacketConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r := &udpRouter{overlay: overlay{netip.MustParsePrefix("127.0.0.0/8")}, v4: listen(), v6: listen(),
		in: make(chan datagram, 64), done: make(chan struct{})}
	for _, c := range []net.PacketConn{r.v4, r.v6} {
		r.wg.Add(1)
		go r.read(c)
	}
	defer r.Close()
	peer := listen().(*net.UDPConn)
	defer peer.Close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	// Queued before PushTo: wait until the reader has put it in the queue.
	peer.WriteToUDPAddrPort([]byte("early"), r.v4.LocalAddr().(*net.UDPAddr).AddrPort())
	testkit.Eventually(t, 30*time.Second, func() bool { return len(r.in) > 0 }, "datagram queued")
	type got struct {
		payload  string
		headroom int
		from     netip.AddrPort
	}
	pushed := make(chan got, 4)
	r.PushTo(func(buf []byte, off int, from netip.AddrPort) {
		for i := range buf[:off] { // the headroom is the handler's to write
			buf[i] = 0xff
		}
		pushed <- got{string(buf[off:]), off, from}
	})
	peer.WriteToUDPAddrPort([]byte("late"), r.v6.LocalAddr().(*net.UDPAddr).AddrPort())
	for _, want := range []string{"early", "late"} {
		select {
		case g := <-pushed:
			if g.payload != want || g.headroom < socks.PushHeadroom || g.from != peerAddr {
				t.Errorf("pushed %+v, want %q from %v with %d bytes of headroom", g, want, peerAddr, socks.PushHeadroom)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%q not pushed", want)
		}
	}

	if _, err := r.WriteToUDPAddrPort([]byte("out"), peerAddr); err != nil {
		t.Fatal(err)
	}
	out := []byte("out")
	if allocs := testing.AllocsPerRun(10, func() { r.WriteToUDPAddrPort(out, peerAddr) }); allocs != 0 {
		t.Errorf("a write allocated %v times, want none", allocs)
	}
	buf := make([]byte, 16)
	peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "out" {
		t.Errorf("peer got %q, %v", buf[:n], err)
	}
}
