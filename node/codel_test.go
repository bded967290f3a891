package node

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/peer"
)

// TestCodel follows RFC 8289's schedule: no drop while packets wait less than the target, or while
// the queue empties behind them; a first drop once they have waited longer for a whole interval;
// then the next drop interval/√count after the count-th until the wait falls below the target; and a dropping state
// that comes back soon starts near the rate that ended the last one.
func TestCodel(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var c codel
	long := 2 * codelTarget
	for d := time.Duration(0); d < time.Second; d += time.Millisecond {
		if c.drop(at(d), codelTarget-time.Microsecond, true) {
			t.Fatalf("dropped at %v a packet that waited less than the target", d)
		}
		if c.drop(at(d), long, false) {
			t.Fatalf("dropped at %v the last packet of the queue", d)
		}
	}

	start := time.Second // the wait stands from here on
	var drops []time.Duration
	for d := start; d < start+time.Second; d += 100 * time.Microsecond {
		if c.drop(at(d), long, true) {
			drops = append(drops, d-start)
		}
	}
	if len(drops) < 4 {
		t.Fatalf("drops at %v, want at least 4 in a second of a standing queue", drops)
	}
	// The packets come every 100 µs: each drop is the first packet at or after its due time.
	due := codelInterval
	for i, got := range drops {
		if got < due || got >= due+100*time.Microsecond {
			t.Errorf("drop %d at %v after the queue stood, want at %v (interval + the sum of interval/√k, k < %d)", i+1, got, due, i+1)
		}
		due += time.Duration(float64(codelInterval) / math.Sqrt(float64(i+1)))
	}

	// The wait falls: no more drops, though the queue is not empty.
	end := start + time.Second
	for d := end; d < end+time.Second; d += time.Millisecond {
		if c.drop(at(d), codelTarget/2, true) {
			t.Fatalf("dropped at %v after the wait fell below the target", d-end)
		}
	}
	// It stands again within 16 intervals: the first drop after an interval, then at the rate the
	// last state ended with (count carried over), not interval/√1 apart.
	again := end + time.Second
	var next []time.Duration
	for d := again; d < again+300*time.Millisecond; d += 100 * time.Microsecond {
		if c.drop(at(d), long, true) {
			next = append(next, d-again)
		}
	}
	if len(next) < 2 || next[1]-next[0] >= codelInterval*3/4 {
		t.Errorf("drops after standing again at %v: want the second sooner than 3/4 of an interval after the first", next)
	}
}

// slowLink sends one packet per perPacket (on synctest's clock) and counts them.
type slowLink struct {
	perPacket time.Duration
	sent      atomic.Int64
}

func (l *slowLink) Send(peer.Key, []byte) error {
	time.Sleep(l.perPacket)
	l.sent.Add(1)
	return nil
}

func (l *slowLink) WaitLink(context.Context, peer.Key) error { return nil }

// TestSendQueueDropsBeforeFull: traffic at 1.5 times what the link carries fills a peer's queue by
// half a packet per packet time, so in a second it holds about 500 packets, waiting half a second,
// and the bound (sendQueueLen) is never reached. CoDel drops anyway: the queue stands.
func TestSendQueueDropsBeforeFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := &slowLink{perPacket: time.Millisecond}
		qs := &sendQueues{log: hclog.NewNullLogger(), link: link}
		var k peer.Key
		pkt := make([]byte, 100)
		const packets = 1500 // 1.5 per ms for a second
		for i := range packets {
			qs.send(k, pkt, false)
			if i%3 == 2 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		synctest.Wait()
		queued := packets - int(link.sent.Load()) - int(qs.full.Load())
		qs.close()
		if queued >= sendQueueLen {
			t.Fatalf("%d packets queued at the end: the bound (%d) was reached, the test shows nothing", queued, sendQueueLen)
		}
		if qs.full.Load() == 0 {
			t.Errorf("%d packets sent, %d queued, none dropped: CoDel let the queue stand", link.sent.Load(), queued)
		}
		t.Logf("%d packets at 1.5x the link's rate for 1 s: %d sent, %d dropped, %d still queued", packets, link.sent.Load(), qs.full.Load(), queued)
	})
}
