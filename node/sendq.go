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
// off). Before that, CoDel (codel.go) drops single packets from a queue that stands, so that packets
// wait there for milliseconds, not for as long as the bound holds on a slow path; the bound is for
// bursts and for a link that stopped.

// sendQueueLen is the number of packets that may wait for one peer's link: 1024 packets of up to
// peer.MaxPacketSize bytes (1.3 MiB), in front of quic-go's own 32. With drop-tail at 128 a flow
// that outran its link lost the tail of each burst, and TCP over the packet path went through 25–30
// retransmission timeouts per bench row (BENCHMARKS.md, stop 36).
const sendQueueLen = 1024

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
	full   atomic.Uint64 // packets dropped because the peer's queue was full or standing (CoDel)
	failed atomic.Uint64 // packets the link refused (no link, link closing)
}

type sendQueue struct {
	ch   chan *outPacket
	stop chan struct{}
}

// outPacket is one queued packet in a pooled buffer.
type outPacket struct {
	b      []byte
	fanOut bool      // a broadcast copy: a peer without a link is skipped, not a drop
	queued time.Time // when it was queued
}

var outPool = sync.Pool{New: func() any { return &outPacket{b: make([]byte, 0, peer.MaxPacketSize)} }}

// send queues a copy of pkt for peer k and returns at once; it never blocks.
func (qs *sendQueues) send(k peer.Key, pkt []byte, fanOut bool) {
	q := qs.queue(k)
	if q == nil {
		qs.failed.Add(1)
		return
	}
	p := outPool.Get().(*outPacket)
	p.b, p.fanOut, p.queued = append(p.b[:0], pkt...), fanOut, time.Now()
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
	var aqm codel
	var woke time.Time // when the link last came back: the wait for it is not a standing queue
	for {
		p := q.next()
		if p == nil {
			return
		}
		since := p.queued
		if woke.After(since) {
			since = woke
		}
		if now := time.Now(); aqm.drop(now, now.Sub(since), len(q.ch) > 0) {
			qs.full.Add(1)
			outPool.Put(p)
			continue
		}
		err := qs.link.Send(k, p.b)
		if errors.Is(err, peer.ErrLinkWaking) {
			// The link wound down and is coming back: the queue holds (later packets wait in
			// it, up to its bound) until it is up, and this packet goes first.
			ctx, cancel := context.WithTimeout(context.Background(), linkWakeWait)
			if qs.link.WaitLink(ctx, k) == nil {
				err = qs.link.Send(k, p.b)
			}
			cancel()
			woke = time.Now()
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
