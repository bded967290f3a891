package node

import (
	"math"
	"time"
)

// codel decides which packets a peer's send queue drops, by CoDel (RFC 8289: Controlled Delay): when
// packets have waited longer than codelTarget for at least codelInterval, the queue is standing, not
// absorbing a burst, and it drops one packet, then more often (interval/√count apart) until the
// wait falls below the target. A flow inside the overlay (TCP over the packet path, an app's own
// QUIC, a video call) then sees a single loss early and slows down, instead of filling the queue and
// losing a run of packets at its tail: gVisor's TCP (NewReno: SACK is off, see netstack.tune) needs
// a round trip per packet lost in one window, or a retransmission timeout, after such a run. The
// queue also stays short for the packets of other flows to the same peer (a game's beside a
// download).
//
// Its zero value is ready; it belongs to the queue's goroutine.
type codel struct {
	firstAbove time.Time // when the wait may first count as standing (zero: below target)
	dropNext   time.Time // when the next drop is due, while dropping
	count      int       // drops in this dropping state (carried over if it comes back soon)
	lastCount  int
	dropping   bool
}

// CoDel's parameters: RFC 8289's (those of Linux's fq_codel), which suit round trips from a LAN's to
// a continent's. A path's bandwidth-delay product is in flight on the path, not in this queue.
const (
	codelTarget   = 5 * time.Millisecond
	codelInterval = 100 * time.Millisecond
)

// drop reports whether to drop the packet just taken from the queue: now is the time, wait how long
// the packet waited, more whether packets are still queued behind it.
func (c *codel) drop(now time.Time, wait time.Duration, more bool) bool {
	ok := c.standing(now, wait, more)
	if c.dropping {
		switch {
		case !ok:
			c.dropping = false
		case !now.Before(c.dropNext):
			c.count++
			c.dropNext = controlLaw(c.dropNext, c.count)
			return true
		}
		return false
	}
	if !ok {
		return false
	}
	c.dropping = true
	// Dropping again soon after the last time: start near the rate that ended it.
	if delta := c.count - c.lastCount; delta > 1 && now.Sub(c.dropNext) < 16*codelInterval {
		c.count = delta
	} else {
		c.count = 1
	}
	c.lastCount = c.count
	c.dropNext = controlLaw(now, c.count)
	return true
}

// standing reports whether the queue has held packets longer than codelTarget for codelInterval.
func (c *codel) standing(now time.Time, wait time.Duration, more bool) bool {
	if wait < codelTarget || !more {
		c.firstAbove = time.Time{}
		return false
	}
	if c.firstAbove.IsZero() {
		c.firstAbove = now.Add(codelInterval)
		return false
	}
	return !now.Before(c.firstAbove)
}

// controlLaw returns when the next drop is due after t, count drops into a dropping state.
func controlLaw(t time.Time, count int) time.Time {
	return t.Add(time.Duration(float64(codelInterval) / math.Sqrt(float64(count))))
}
