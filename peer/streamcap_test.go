package peer

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestInboundStreamsBoundedOverall: besides each peer's own bound, the streams all peers have open to
// us together are bounded (each holds a local connection and a file descriptor), and a closed one
// makes room for any peer.
func TestInboundStreamsBoundedOverall(t *testing.T) {
	a, c, b := newTestNode(t), newTestNode(t), newTestNode(t)
	b.ep.maxInbound, b.ep.maxInboundAll = 2, 3
	ended := make(chan struct{}, 8)
	b.ep.cfg.AcceptStream = func(s *IncomingStream) {
		conn, err := s.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, conn) // until the opener closes its end
		conn.Close()
		ended <- struct{}{}
	}
	a.ep.SetPeers([]Info{b.info()})
	c.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info(), c.info()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(from *testNode) (net.Conn, error) {
		return from.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
	}
	var open []net.Conn
	defer func() {
		for _, conn := range open {
			conn.Close()
		}
	}()
	for _, from := range []*testNode{a, a, c} {
		conn, err := dial(from)
		if err != nil {
			t.Fatalf("stream within the bounds: %v", err)
		}
		open = append(open, conn)
	}
	if conn, err := dial(c); err == nil {
		conn.Close()
		t.Fatal("c opened a stream past the bound over all peers (its own bound is not reached)")
	}
	if got := b.ep.inboundAll.Load(); got != 3 {
		t.Fatalf("b counts %d streams over all peers, want 3", got)
	}
	open[0].Close() // one of a's
	open = open[1:]
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("b never saw the stream end")
	}
	conn, err := dial(c)
	if err != nil {
		t.Fatalf("no room for c after a's stream closed: %v", err)
	}
	open = append(open, conn)
}
