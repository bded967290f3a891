package deadline

import (
	"testing"
	"testing/synctest"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d Deadline
		if closed(d.Done()) {
			t.Fatal("the zero Deadline has passed")
		}
		d.Set(time.Now().Add(time.Second))
		waiting := d.Done()
		time.Sleep(999 * time.Millisecond) // virtual
		if closed(waiting) {
			t.Fatal("passed early")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if !closed(waiting) {
			t.Fatal("a wait under way did not see the deadline pass")
		}

		d.Set(time.Time{}) // cleared: a fresh channel that never closes
		if closed(d.Done()) {
			t.Fatal("cleared, but still passed")
		}
		d.Set(time.Now().Add(time.Second))
		waiting = d.Done()
		d.Set(time.Now().Add(time.Hour)) // moved later before it passed
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if closed(waiting) {
			t.Fatal("a moved deadline passed at its old time")
		}
		d.Set(time.Now().Add(-time.Second)) // in the past: passed at once
		if !closed(d.Done()) {
			t.Fatal("a deadline in the past has not passed")
		}
		d.Stop()
	})
}
