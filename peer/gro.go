package peer

import (
	"errors"

	"golang.org/x/net/ipv4"
)

// groSegments bounds the datagrams one coalesced read may carry (the kernel's UDP_GRO_CNT_MAX is
// 64), and groBufSize is the room such a read needs: a coalesced read into a smaller buffer loses
// its tail.
const (
	groBatch   = 8 // coalesced reads per syscall, like quic-go's own batch
	groBufSize = 64 << 10
	groOOBSize = 256 // room for the TOS, packet-info and UDP_GRO control messages
)

// groReader receives with UDP generic receive offload (Linux's UDP_GRO): the kernel hands over up
// to 64 datagrams of one flow, sent back to back, as one buffer with their segment size, instead of
// one socket buffer and one wake-up each. Over loopback a sender's GSO batch even arrives whole,
// never split. quic-go reads through ReadBatch one datagram per message; groReader splits the
// coalesced buffers back into datagrams (one copy of each, far cheaper than the per-datagram kernel
// work it replaces) and keeps what does not fit for the next call.
//
// Not safe for concurrent use: quic-go's transport reads from one goroutine.
type groReader struct {
	batch batchReader
	msgs  []ipv4.Message
	n     int // messages from the last read
	next  int // the message being split
	off   int // where its next datagram starts
	seg   int // its segment size
}

// newGROReader reads from batch, a socket with UDP_GRO on.
func newGROReader(batch batchReader) *groReader {
	g := &groReader{batch: batch, msgs: make([]ipv4.Message, groBatch)}
	for i := range g.msgs {
		g.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
		g.msgs[i].OOB = make([]byte, groOOBSize)
	}
	return g
}

// batchReader reads several messages in one call: ipv4.PacketConn's recvmmsg.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

var errNoDatagram = errors.New("peer: batch read returned no datagram")

// ReadBatch fills ms with datagrams, one per message (into each message's first buffer and its
// OOB), blocking only when none is left from the last coalesced read.
func (g *groReader) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if g.next >= g.n {
		n, err := g.batch.ReadBatch(g.msgs, flags)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, errNoDatagram // quic-go would take 0 without an error as a packet
		}
		g.n, g.next = n, 0
		g.start()
	}
	filled := 0
	for filled < len(ms) && g.next < g.n {
		m := &g.msgs[g.next]
		end := min(g.off+g.seg, m.N)
		out := &ms[filled]
		out.N = copy(out.Buffers[0], m.Buffers[0][g.off:end])
		out.NN = copy(out.OOB, m.OOB[:m.NN])
		out.Flags = m.Flags
		out.Addr = m.Addr
		filled++
		g.off = end
		if g.off >= m.N {
			g.next++
			g.start()
		}
	}
	return filled, nil
}

// start sets up the split of message g.next.
func (g *groReader) start() {
	g.off = 0
	if g.next >= g.n {
		return
	}
	m := &g.msgs[g.next]
	g.seg = m.N
	if s := groSegmentSize(m.OOB[:m.NN]); s > 0 && s < m.N {
		g.seg = s
	}
	if g.seg <= 0 { // an empty datagram is still one
		g.seg = 1
	}
}
