// Package deadline gives a reader that waits on channels (a packet queue, not a socket) a read
// deadline that behaves like a net.Conn's: it can be set, moved and cleared at any time, and a
// wait that is already under way sees the change. It knows nothing about what is read.
package deadline

import (
	"sync"
	"time"
)

// Deadline is a read deadline. The zero Deadline has none; it is safe for concurrent use.
type Deadline struct {
	mu    sync.Mutex
	ch    chan struct{} // closed once the deadline has passed; nil until first asked for
	timer *time.Timer
}

// Done returns a channel that is closed once the deadline passes. Take it afresh for each wait:
// Set replaces it when it moves a deadline that has passed.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// Set moves the deadline to t; a zero t means none.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	select {
	case <-d.ch: // passed: start a fresh one
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	ch := d.ch
	wait := time.Until(t)
	if wait <= 0 {
		close(ch)
		return
	}
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ch == ch {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
}

// Stop releases the deadline's timer; call it when the reader is closed.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *Deadline) stopLocked() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
