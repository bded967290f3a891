package node

import (
	"sync"
	"sync/atomic"

	"github.com/warren-net/warren/peer"
)

// Outbound packets never wait for a peer link. quic-go's SendDatagram blocks while a link's DATAGRAM
// queue (32 frames in v0.65.0) is full, which happens whenever congestion control holds the link back
// and lasts until the idle timeout when the path has died. The netstack and the TUN reader call
// output synchronously, one goroutine for many flows and peers, so a blocked send would stall traffic
// to every peer. Instead output copies the packet into a bounded queue per peer and returns; one
// goroutine per peer with traffic feeds the link, and a packet that finds its queue full is dropped
// and counted, as a router's full interface queue would (TCP inside the overlay sees a loss and backs
// off).

// sendQueueLen is the number of packets that may wait for one peer's link: 128 packets of up to
// peer.MaxPacketSize bytes (160 KiB), in front of quic-go's own 32.
const sendQueueLen = 128

// sendQueues are the per-peer outbound queues. The zero value is ready; close ends it.
type sendQueues struct {
	queues sync.Map // peer.Key → *sendQueue; read on every packet

	// mu guards creating and removing queues, and closed.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // every queue's goroutine

	sent   atomic.Uint64 // packets handed to a link
	full   atomic.Uint64 // packets dropped because the peer's queue was full
	failed atomic.Uint64 // packets the link refused (no link, link closing)
}

type sendQueue struct {
	ch   chan *outPacket
	stop chan struct{}
}

// outPacket is one queued packet in a pooled buffer.
type outPacket struct {
	b      []byte
	fanOut bool // a broadcast copy: a peer without a link is skipped, not a drop
}

var outPool = sync.Pool{New: func() any { return &outPacket{b: make([]byte, 0, peer.MaxPacketSize)} }}

// send queues a copy of pkt for peer k and returns at once; it never blocks.
func (n *Node) send(k peer.Key, pkt []byte, fanOut bool) {
	q := n.sendQueue(k)
	if q == nil {
		n.sendq.failed.Add(1)
		return
	}
	p := outPool.Get().(*outPacket)
	p.b, p.fanOut = append(p.b[:0], pkt...), fanOut
	select {
	case q.ch <- p:
	default:
		outPool.Put(p)
		n.sendq.full.Add(1)
		if n.log.IsTrace() {
			n.log.Trace("drop outbound packet: send queue full", "peer", k)
		}
	}
}

// sendQueue returns k's queue, starting it on first use; nil once the node is closing.
func (n *Node) sendQueue(k peer.Key) *sendQueue {
	if q, ok := n.sendq.queues.Load(k); ok {
		return q.(*sendQueue)
	}
	qs := &n.sendq
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
	go n.runSendQueue(k, q)
	return q
}

// runSendQueue feeds k's link until the queue is stopped. Send may block (quic-go's backpressure);
// meanwhile new packets wait in the queue or are dropped.
func (n *Node) runSendQueue(k peer.Key, q *sendQueue) {
	defer n.sendq.wg.Done()
	for {
		select {
		case <-q.stop:
			return
		case p := <-q.ch:
			switch err := n.ep.Send(k, p.b); {
			case err == nil:
				n.sendq.sent.Add(1)
			case !p.fanOut:
				n.sendq.failed.Add(1)
				if n.log.IsTrace() {
					n.log.Trace("drop outbound packet", "peer", k, "error", err)
				}
			}
			outPool.Put(p)
		}
	}
}

// forgetSendQueues stops the queues of peers that are no longer in the peer map.
func (n *Node) forgetSendQueues(peers map[peer.Key]bool) {
	qs := &n.sendq
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

// closeSendQueues stops every queue and waits for their goroutines; packets still queued are
// dropped. Call it after the peer endpoint is closed, so that no Send is left blocking.
func (n *Node) closeSendQueues() {
	qs := &n.sendq
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
