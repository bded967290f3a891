package abuse

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a bounded set of token buckets, one per key (an address prefix, an identity). A bucket
// that is full again is the same as a new one, so Sweep drops it; when the set is at its bound even
// after a sweep, an arbitrary bucket makes room (its key gets a fresh, full bucket later: an attacker
// who churns keys gains no more than the keys themselves give him). Safe for concurrent use.
type Limiter[K comparable] struct {
	r     rate.Limit
	burst int
	max   int
	mu    sync.Mutex
	m     map[K]*rate.Limiter
}

// NewLimiter returns a Limiter of at most buckets buckets that each allow r events a second with bursts
// of burst (at least 1). rate.Inf allows everything.
func NewLimiter[K comparable](r rate.Limit, burst, buckets int) *Limiter[K] {
	return &Limiter[K]{r: r, burst: max(burst, 1), max: max(buckets, 1), m: make(map[K]*rate.Limiter)}
}

// Allow takes a token from k's bucket and reports whether there was one.
func (l *Limiter[K]) Allow(k K, now time.Time) bool {
	if l.r == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[k]
	if lim == nil {
		if len(l.m) >= l.max {
			l.sweepLocked(now)
		}
		for victim := range l.m {
			if len(l.m) < l.max {
				break
			}
			delete(l.m, victim)
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.m[k] = lim
	}
	return lim.AllowN(now, 1)
}

// Wait returns how long k must wait for its next token (0: one is there now), without taking it.
func (l *Limiter[K]) Wait(k K, now time.Time) time.Duration {
	if l.r == rate.Inf {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[k]
	if lim == nil {
		return 0
	}
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.r) * float64(time.Second))
}

// Sweep drops the buckets that are full again.
func (l *Limiter[K]) Sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
}

func (l *Limiter[K]) sweepLocked(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
}

// Len returns the number of buckets held.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
