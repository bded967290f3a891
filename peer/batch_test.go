package peer

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// TestPollContext pins what the receive loop's batches rely on: ReceiveDatagram with a pollContext
// returns a datagram already queued, in order, and (nil, nil) at once when none is (were it to wait,
// the bubble would deadlock and synctest fail the test). In virtual time.
func TestPollContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		a.ep.SetPeers([]Info{{Key: b.key}}) // no endpoints: no link of their own
		b.ep.SetPeers([]Info{{Key: a.key}})
		r := a.ep.dial(t.Context(), b.key, PathDirect, b.ep.LocalAddr())
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.conn.CloseWithError(0, "")
		// Not installed: nothing but this test reads r.conn. b took it as its link to a.
		if pkt, err := r.conn.ReceiveDatagram(pollContext{}); pkt != nil || err != nil {
			t.Fatalf("poll of an empty queue: %q, %v; want nil, nil", pkt, err)
		}
		synctest.Wait()
		for i := range 3 {
			if err := b.ep.Send(a.key, []byte{'p', byte('0' + i)}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		synctest.Wait() // all three queued at a
		for i := range 3 {
			pkt, err := r.conn.ReceiveDatagram(pollContext{})
			if want := string([]byte{'p', byte('0' + i)}); string(pkt) != want || err != nil {
				t.Fatalf("poll %d: %q, %v; want %q", i, pkt, err, want)
			}
		}
		if pkt, err := r.conn.ReceiveDatagram(pollContext{}); pkt != nil || err != nil {
			t.Fatalf("poll after the last: %q, %v; want nil, nil", pkt, err)
		}
	})
}

// TestReceiveBatches: packets that queue up while the receiver is busy are passed on in one batch,
// which Flush ends (at most maxBatch packets per batch), and a lone packet is flushed at once. In
// virtual time: b's Receive holds the first packet until a has sent the rest and they are queued.
func TestReceiveBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newTestNode(t), newTestNode(t)
		var (
			mu     sync.Mutex
			events []string
			hold   = make(chan struct{})
			held   = false
		)
		b.ep.cfg.Receive = func(_ Key, pkt []byte) {
			mu.Lock()
			events = append(events, string(pkt))
			first := !held && string(pkt) == "0"
			held = held || first
			mu.Unlock()
			if first {
				<-hold
			}
		}
		b.ep.cfg.Flush = func() {
			mu.Lock()
			events = append(events, "F")
			mu.Unlock()
		}
		a.ep.SetPeers([]Info{b.info()})
		b.ep.SetPeers([]Info{a.info()})
		// The handshake may wait on quic-go's timers (an ACK delay, a ping's pacing): in virtual
		// time, which moves only while the test sleeps, so wait on the condition, not on a quiet
		// bubble.
		waitFor(t, "a direct link both ways", func() bool {
			return a.ep.Status(b.key).Path == PathDirect && b.ep.Status(a.key).Path == PathDirect
		})
		synctest.Wait()
		send := func(from, to int) {
			for i := from; i < to; i++ {
				if err := a.ep.Send(b.key, fmt.Appendf(nil, "%d", i)); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
		}
		send(0, 1)
		synctest.Wait() // b holds packet 0
		const n = maxBatch + 6
		send(1, n)
		synctest.Wait() // the rest are queued at b
		close(hold)
		synctest.Wait()
		send(n, n+1) // a lone packet: a batch of its own
		synctest.Wait()

		var want []string
		for i := range n + 1 {
			want = append(want, fmt.Sprint(i))
			if i == maxBatch-1 || i == n-1 || i == n {
				want = append(want, "F")
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(events, " "); got != strings.Join(want, " ") {
			t.Errorf("Receive and Flush calls:\n got %s\nwant %s", got, strings.Join(want, " "))
		}
	})
}
