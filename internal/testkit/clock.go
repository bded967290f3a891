package testkit

import (
	"sync/atomic"
	"time"
)

// Clock is a clock a test moves by hand, for code that takes a now function (token buckets, expiry):
// it stands still until Advance, so how fast a loaded machine runs the test changes nothing.
type Clock struct {
	base   time.Time
	offset atomic.Int64
}

// NewClock returns a Clock that reads the current time until it is moved.
func NewClock() *Clock { return &Clock{base: time.Now()} }

// Now returns the clock's time; safe for concurrent use.
func (c *Clock) Now() time.Time { return c.base.Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
