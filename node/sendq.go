package node

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/peer"
)

// Outbound packets never wait for a peer link. quic-go's SendDatagram blocks while a link's DATAGRAM
// queue (32 frames in v0.65.0) is full, which happens whenever congestion control holds the link back
// and lasts until the idle timeout when the path has died. The netstack and the TUN reader call
// output synchronously, one goroutine for many flows and peers, so a blocked send would stall traffic
// to every peer. Instead output copies the packet into a bounded queue per peer and returns; one
// goroutine per peer with traffic feeds the link, and a packet that finds its queue full is dropped
// and counted, as a router's full interface queue would (TCP inside the overlay sees a loss and backs
// off). The queue is bounded in time as well as in packets (sendQueueMaxWait).

// sendQueueLen is the number of packets that may wait for one peer's link: 1024 packets of up to
// peer.MaxPacketSize bytes (1.3 MiB), in front of quic-go's own 32. At 128, a flow that outran its
// link on a fast path (TCP over the packet path, loopback) lost the tail of each burst, and gVisor's
// NewReno (SACK is off: netstack.tune) went through 25–30 retransmission timeouts per bench row
// (BENCHMARKS.md, stop 36).
const sendQueueLen = 1024

// sendQueueMaxWait bounds the queue in time: on a slow path 1024 packets take long to send (410 ms
// at 20 Mbit/s), and a flow that does not slow down when it loses packets (a UDP stream faster than
// the path) would keep the queue full, every packet to that peer, a game's among them, waiting as
// long. A packet that would wait longer than this, at the rate the link has been taking packets,
// is dropped as a full queue drops it (BENCHMARKS.md, stop 36). On a LAN or loopback the queue
// drains in a few milliseconds.
const sendQueueMaxWait = 50 * time.Millisecond

// linkWakeWait bounds how long a peer's queue waits for a link that wound down to come back
// (peer.ErrLinkWaking): a relay dial, with margin for the handshake.
const linkWakeWait = 10 * time.Second

// linkSender is what the send queues need of the peer endpoint. *peer.Endpoint implements it.
type linkSender interface {
	Send(k peer.Key, pkt []byte) error
	WaitLink(ctx context.Context, k peer.Key) error
}

var _ linkSender = (*peer.Endpoint)(nil)

// sendQueues are the per-peer outbound queues. The zero value is ready once log and link are set
// (link before the first send); close ends it.
type sendQueues struct {
	log    hclog.Logger
	link   linkSender
	queues sync.Map // peer.Key → *sendQueue; read on every packet

	// mu guards creating and removing queues, and closed.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // every queue's goroutine

	sent   atomic.Uint64 // packets handed to a link
	full   atomic.Uint64 // packets dropped because the peer's queue was full (in packets or in time)
	failed atomic.Uint64 // packets the link refused (no link, link closing)
}

type sendQueue struct {
	ch   chan *outPacket
	stop chan struct{}
	// perPacket is how long the link has been taking to take one packet while packets waited (a
	// moving average, in nanoseconds; 0 while it took them as fast as they came). send drops a
	// packet that would wait longer than sendQueueMaxWait behind those queued.
	perPacket atomic.Int64
	// sending is when the link's Send under way began (monoNanos; 0 between sends): a Send that
	// blocks (a path that stopped) counts as the time of one packet, so the queue stops taking
	// packets at once instead of filling up for as long as the link stays stopped.
	sending atomic.Int64
}

// monoStart anchors monoNanos.
var monoStart = time.Now()

// monoNanos is the monotonic clock in nanoseconds since the process started, plus one so that it is
// never 0: a wall-clock reading would jump with the system clock (an NTP step), and a Send under
// way would then count as minutes long, or as negative.
func monoNanos() int64 { return int64(time.Since(monoStart)) + 1 }

// outPacket is one queued packet in a pooled buffer.
type outPacket struct {
	b      []byte
	fanOut bool // a broadcast copy: a peer without a link is skipped, not a drop
}

var outPool = sync.Pool{New: func() any { return &outPacket{b: make([]byte, 0, peer.MaxPacketSize)} }}

// send queues a copy of pkt for peer k and returns at once; it never blocks.
func (qs *sendQueues) send(k peer.Key, pkt []byte, fanOut bool) {
	q := qs.queue(k)
	if q == nil {
		qs.failed.Add(1)
		return
	}
	if n := len(q.ch); n > 0 {
		per := q.perPacket.Load()
		if since := q.sending.Load(); since != 0 {
			per = max(per, monoNanos()-since)
		}
		if time.Duration(int64(n)*per) > sendQueueMaxWait {
			qs.full.Add(1)
			return
		}
	}
	p := outPool.Get().(*outPacket)
	p.b, p.fanOut = append(p.b[:0], pkt...), fanOut
	select {
	case q.ch <- p:
	default:
		outPool.Put(p)
		qs.full.Add(1)
		if qs.log.IsTrace() {
			qs.log.Trace("drop outbound packet: send queue full", "peer", k)
		}
	}
}

// queue returns k's queue, starting it on first use; nil once the node is closing.
func (qs *sendQueues) queue(k peer.Key) *sendQueue {
	if q, ok := qs.queues.Load(k); ok {
		return q.(*sendQueue)
	}
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.closed {
		return nil
	}
	if q, ok := qs.queues.Load(k); ok {
		return q.(*sendQueue)
	}
	q := &sendQueue{ch: make(chan *outPacket, sendQueueLen), stop: make(chan struct{})}
	qs.queues.Store(k, q)
	qs.wg.Add(1)
	go qs.run(k, q)
	return q
}

// run feeds k's link until the queue is stopped. Send may block (quic-go's backpressure);
// meanwhile new packets wait in the queue or are dropped.
func (qs *sendQueues) run(k peer.Key, q *sendQueue) {
	defer qs.wg.Done()
	var last time.Time // when the last packet was taken
	waited := false    // whether packets were queued behind it
	for {
		p := q.next()
		if p == nil {
			return
		}
		now := time.Now()
		if waited {
			// The link took the last packet while this one waited: the time between the two is
			// what one packet costs now (one stall counts as at most sendQueueMaxWait). A moving
			// average over about 8 packets.
			avg := q.perPacket.Load()
			q.perPacket.Store(avg + (int64(min(now.Sub(last), sendQueueMaxWait))-avg)/8)
		} else {
			q.perPacket.Store(0) // the queue had emptied: the link kept up
		}
		last, waited = now, len(q.ch) > 0
		q.sending.Store(monoNanos())
		err := qs.link.Send(k, p.b)
		q.sending.Store(0)
		if errors.Is(err, peer.ErrLinkWaking) {
			// The link wound down and is coming back: the queue holds (later packets wait in
			// it, up to its bound) until it is up, and this packet goes first.
			ctx, cancel := context.WithTimeout(context.Background(), linkWakeWait)
			if qs.link.WaitLink(ctx, k) == nil {
				err = qs.link.Send(k, p.b)
			}
			cancel()
			waited = false // the wait for the link to come back is not its rate
		}
		switch {
		case err == nil:
			qs.sent.Add(1)
		case !p.fanOut:
			qs.failed.Add(1)
			if qs.log.IsTrace() {
				qs.log.Trace("drop outbound packet", "peer", k, "error", err)
			}
		}
		outPool.Put(p)
	}
}

// next returns the queue's next packet, waiting for one if it is empty; nil once it is stopped.
//
// A packet that wakes the queue and is a bare TCP acknowledgement goes out after a yield
// (runtime.Gosched). gVisor acknowledges a segment at once, from the goroutine that hands the
// segment's data to the socket, so the acknowledgement readies this goroutine just after that
// data's reader and, with one P, runs first: the whole send (quic-go's goroutines and a sendmsg)
// went ahead of delivering the data to the app. Yielding puts the reader first. Packet-path round
// trips as shipped: p50 233 µs against 291 on average over 12 alternating pairs (BENCHMARKS.md,
// "Changes of stop 33"). Data packets, and a queue with packets waiting, never yield.
func (q *sendQueue) next() *outPacket {
	select {
	case <-q.stop:
		return nil
	case p := <-q.ch:
		return p
	default:
	}
	select {
	case <-q.stop:
		return nil
	case p := <-q.ch:
		if packet.PureACK(p.b) {
			runtime.Gosched()
		}
		return p
	}
}

// forget stops the queues of peers that are no longer in the peer map.
func (qs *sendQueues) forget(peers map[peer.Key]bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	qs.queues.Range(func(k, q any) bool {
		if !peers[k.(peer.Key)] {
			qs.queues.Delete(k)
			close(q.(*sendQueue).stop)
		}
		return true
	})
}

// close stops every queue and waits for their goroutines; packets still queued are dropped. Call
// it after the peer endpoint is closed, so that no Send is left blocking.
func (qs *sendQueues) close() {
	qs.mu.Lock()
	if !qs.closed {
		qs.closed = true
		qs.queues.Range(func(k, q any) bool {
			qs.queues.Delete(k)
			close(q.(*sendQueue).stop)
			return true
		})
	}
	qs.mu.Unlock()
	qs.wg.Wait()
}
