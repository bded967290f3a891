// Package backoff yields jittered, exponentially growing retry delays. It does not sleep or retry by
// itself: callers own their loops.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields delays from Min doubling up to Max, each with ±25% jitter so that many clients
// retrying the same server spread out. Not safe for concurrent use.
type Backoff struct {
	min, max, cur time.Duration
	steady        bool // no jitter
}

// New returns a Backoff starting at min and capped at max.
func New(min, max time.Duration) *Backoff { return &Backoff{min: min, max: max, cur: min} }

// NewSteady is New without jitter, for retries that two parties must make at the same moments:
// they start together and must stay together.
func NewSteady(min, max time.Duration) *Backoff {
	return &Backoff{min: min, max: max, cur: min, steady: true}
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	if b.steady {
		return d
	}
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return d + jitter
}

// Reset starts over at the minimum delay.
func (b *Backoff) Reset() { b.cur = b.min }
