package peer

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing, jittered delays between min and max. Not safe for concurrent use.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

// next returns the next delay: the current step with ±25% jitter, then doubles the step up to max.
func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return d + jitter
}

func (b *backoff) reset() { b.cur = b.min }
