package netstack

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// Receive coalescing (generic receive offload) for the packet path.
//
// A bulk TCP transfer on the packet path reaches a node as a train of full-sized segments, each in a
// QUIC datagram of its own. gVisor's TCP spends most of its receive cost per segment (the IP layer,
// the endpoint's queue, acknowledging), so a receiver that hands the stack one 40 KB segment instead
// of 32 of 1240 bytes does a fraction of the work (gVisor's own GRO, as its Linux link endpoints
// use: in-order segments of one flow with equal sizes, flags and options are merged into the first,
// up to 64 KB; anything else passes through). The stack cannot know where a train ends; its caller
// (the peer link's receive loop) can: Gather while packets are queued, Flush when the queue is
// empty, so no packet waits for a timer and a lone packet (a game's, an SSH keystroke, an ACK) goes
// up at once.

// Gather is Inject for a packet of a batch: a TCP segment may be held, to be merged with the next
// ones of its flow, until Flush. The caller must call Flush when the batch ends, before it waits for
// more packets. pkt is copied, as by Inject.
func (ns *Stack) Gather(pkt []byte) { ns.inject(pkt, true) }

// Flush delivers every packet Gather holds.
func (ns *Stack) Flush() { ns.gro.flush() }

// coalescer is a Stack's GRO engine, shared by every caller of Gather (a lock: one receive loop per
// peer link calls it).
type coalescer struct {
	mu   sync.Mutex
	gro  gro.GRO
	held int // packets enqueued since the last flush: 0 makes flush free
}

func (c *coalescer) init(l *link, stats *counters) {
	c.gro.Init(true)
	c.gro.Dispatcher = groTarget{l, stats}
}

// gather hands pkt to the engine, which keeps its own reference to whatever it holds.
func (ns *Stack) gather(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c := &ns.gro
	pkt.NetworkProtocolNumber = proto
	c.mu.Lock()
	c.gro.Enqueue(pkt)
	c.held++
	c.mu.Unlock()
}

// groFlushPasses is how often flush calls gro.GRO.Flush: gVisor's Flush (at the version in go.mod)
// delivers only the first packet of each of its buckets (it resets the list entry it removes
// before it asks that entry for the next one), and a bucket holds at most 8 packets.
const groFlushPasses = 8

func (c *coalescer) flush() {
	c.mu.Lock()
	if c.held > 0 {
		for range min(c.held, groFlushPasses) {
			c.gro.Flush()
		}
		c.held = 0
	}
	c.mu.Unlock()
}

// groTarget is where the engine delivers: the link, as Inject does (a packet that arrives after
// Close is dropped and counted).
type groTarget struct {
	l     *link
	stats *counters
}

func (t groTarget) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if !t.l.deliver(proto, pkt) {
		t.stats.closed.Add(1)
	}
}

func (groTarget) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
