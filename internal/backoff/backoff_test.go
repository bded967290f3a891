package backoff

import (
	"testing"
	"time"
)

func TestGrowsToCapWithJitter(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	var last time.Duration
	for i := 0; i < 10; i++ {
		last = b.Next()
		if last < 75*time.Millisecond || last > 1250*time.Millisecond {
			t.Fatalf("delay %v out of range", last)
		}
	}
	if last < 750*time.Millisecond {
		t.Errorf("did not reach the cap: %v", last)
	}
	b.Reset()
	if d := b.Next(); d > 125*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
}

func TestSteady(t *testing.T) {
	b := NewSteady(time.Second, 5*time.Second)
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		if got := b.Next(); got != want {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Fatalf("after Reset: %v", got)
	}
}
