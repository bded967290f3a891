package socks

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// Memory held by UDP associations comes back when they end: each holds two 64 KiB buffers while it
// lives, and nothing after (a load of thousands of associations once kept hundreds of MiB).
func TestUDPAssociationMemoryReturns(t *testing.T) {
	const n = 200 // × ~130 KiB ≈ 26 MiB while open
	s, err := New(Config{
		Dial:            func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		ListenUDP:       func() (net.PacketConn, error) { return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) },
		MaxAssociations: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	ctrls := make([]net.Conn, 0, n)
	for range n {
		c, _ := associate(t, ln.Addr().String())
		ctrls = append(ctrls, c)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return s.associations.Load() == n }, "associations open: %d", s.associations.Load())
	open := heap()
	for _, c := range ctrls {
		c.Close()
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return s.associations.Load() == 0 }, "associations left: %d", s.associations.Load())
	after := heap()
	t.Logf("heap in use: %d KiB before, %d KiB with %d associations, %d KiB after", before>>10, open>>10, n, after>>10)
	if open < before+n*64<<10 {
		t.Fatalf("associations held only %d KiB: the measurement does not see them", (open-before)>>10)
	}
	if after > before+(open-before)/4 { // a little stays in pools and stacks; a leak keeps it all
		t.Errorf("%d KiB still in use after every association ended (%d KiB while open)", (after-before)>>10, (open-before)>>10)
	}
}
