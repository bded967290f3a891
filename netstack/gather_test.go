package netstack

import (
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestGatherCoalesces: a train of full-sized segments handed over with Gather reaches B's TCP at
// Flush, not before, as one packet that its IP layer takes, and the connection's bytes arrive
// intact; over IPv4 and IPv6.
func TestGatherCoalesces(t *testing.T) {
	for _, dst := range []netip.Addr{ipB4, ipB6} {
		t.Run(dst.String(), func(t *testing.T) { gatherTrain(t, dst) })
	}
}

func gatherTrain(t *testing.T, dst netip.Addr) {
	const size = 256 << 10
	data, sum := randBytes(size)
	got := make(chan [32]byte, 1)
	port := serve(t, func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	})
	a, b, ab, _ := pair(t, port)
	c := dial(t, a, dst, port)
	defer c.Close()
	ab.sync() // B has every packet of A's handshake

	held := make(chan []byte, 1024)
	ab.held.Store(&held)
	go c.Write(data) // more than TCP's initial window: the first segments leave at once, full-sized
	const train = 8
	var pkts [][]byte
	for len(pkts) < train {
		select {
		case p := <-held:
			pkts = append(pkts, p)
		case <-time.After(time.Minute):
			t.Fatalf("%d packets left A, want %d", len(pkts), train)
		}
	}
	// Counted where gVisor's IP layer takes a packet, synchronously with Gather and Flush.
	ip := func() (in, malformed uint64) {
		st := b.s.Stats().IP
		return st.PacketsReceived.Value(), st.MalformedPacketsReceived.Value()
	}
	// Segments merge only with equal TCP options: a train that straddles a tick of the timestamp
	// clock (1 ms) goes up as one packet per timestamp.
	runs := 1
	for i := 1; i < len(pkts); i++ {
		if tsVal(pkts[i]) != tsVal(pkts[i-1]) {
			runs++
		}
	}
	in0, malformed0 := ip()
	for _, p := range pkts {
		b.Gather(p)
	}
	if in, _ := ip(); in-in0 != uint64(runs-1) {
		t.Fatalf("%d packets reached B's IP layer before Flush, want %d (runs of equal timestamps: %d)", in-in0, runs-1, runs)
	}
	b.Flush()
	if in, malformed := ip(); in-in0 != uint64(runs) || malformed != malformed0 {
		t.Errorf("%d full-sized segments in a row (%d timestamps) reached B's IP layer as %d packets (%d malformed), want %d (none)",
			train, runs, in-in0, malformed-malformed0, runs)
	}
	if st := b.Stats(); st.PacketsIn < train {
		t.Errorf("B counted %d packets in, want at least %d", st.PacketsIn, train)
	}

	// The rest goes the usual way.
	ab.held.Store(nil)
	for len(held) > 0 {
		b.Inject(<-held)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	select {
	case s := <-got:
		if s != sum {
			t.Error("the service got other bytes than sent")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the service got no EOF")
	}
}

// TestFlushDeliversEveryFlow: Flush delivers what Gather holds for every flow, however many share
// one of the engine's buckets (gVisor's own Flush delivers only the first of each), and a second
// segment of a flow is merged with the first. The segments, hand-built, belong to no connection:
// what is counted is what reached B's IP layer.
func TestFlushDeliversEveryFlow(t *testing.T) {
	s, err := New(Config{Addrs: pfx(ipB4, ipB6), Output: func([]byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const flows = 24
	payload := make([]byte, 1000)
	segment := func(srcPort uint16, seq uint32) []byte {
		return tcpSegment(ipA4, ipB4, srcPort, 80, seq, 1, header.TCPFlagAck, payload)
	}
	received := func() uint64 { return s.s.Stats().IP.PacketsReceived.Value() }
	before := received()
	for i := range flows {
		s.Gather(segment(uint16(40000+i), 1))
		s.Gather(segment(uint16(40000+i), 1+uint32(len(payload)))) // the next one: merged
	}
	if n := received() - before; n != 0 {
		t.Fatalf("%d packets reached the IP layer before Flush", n)
	}
	s.Flush()
	if n := received() - before; n != flows {
		t.Errorf("Flush delivered %d packets for %d flows of two segments each, want %d", n, flows, flows)
	}
	s.Flush() // nothing left
	if n := received() - before; n != flows {
		t.Errorf("a second Flush delivered %d more", int64(n)-flows)
	}
}

// tsVal returns the TCP timestamp of a TCP segment in an IPv4 or IPv6 packet (no extension headers).
func tsVal(pkt []byte) uint32 {
	off := header.IPv6MinimumSize
	if pkt[0]>>4 == 4 {
		off = int(header.IPv4(pkt).HeaderLength())
	}
	tcp := header.TCP(pkt[off:])
	return header.ParseTCPOptions(tcp.Options()).TSVal
}
