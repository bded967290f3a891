package testkit

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	var n atomic.Int32
	Eventually(t, time.Minute, func() bool { return n.Add(1) == 5 }, "never counted to 5")
	if got := n.Load(); got != 5 {
		t.Fatalf("cond called %d times, want 5 (it stops once true)", got)
	}

	// A condition that stays false fails the test with the message after the timeout.
	msg := make(chan string, 1)
	go func() {
		defer func() { msg <- fmt.Sprint(recover()) }()
		Eventually(fatalT{t}, 20*time.Millisecond, func() bool { return false }, "still %s", "false")
	}()
	if m := <-msg; !strings.Contains(m, "still false") {
		t.Errorf("failure %q, want one saying what was awaited", m)
	}
}

// fatalT panics with Fatalf's message instead of failing the test.
type fatalT struct{ testing.TB }

func (fatalT) Helper() {}
func (fatalT) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// TestVerifyNone: a goroutine that ends a second after the check begins (longer than goleak's own
// retries take) is not reported; one that does not end is, once leakWait has passed.
func TestVerifyNone(t *testing.T) {
	check := VerifyNone(t)
	late := make(chan struct{})
	go func() { <-late }()
	time.AfterFunc(time.Second, func() { close(late) })
	check() // fails t if it gives up before that goroutine ends

	defer func(w time.Duration) { leakWait = w }(leakWait)
	leakWait = 100 * time.Millisecond
	rec := &errorT{TB: t}
	check = VerifyNone(rec)
	stuck := make(chan struct{})
	defer close(stuck)
	go func() { <-stuck }()
	check()
	if !strings.Contains(rec.err, "found unexpected goroutines") {
		t.Errorf("a goroutine that never ends was not reported (error %q)", rec.err)
	}
}

// errorT records Error's message instead of failing the test.
type errorT struct {
	testing.TB
	err string
}

func (*errorT) Helper() {}
func (e *errorT) Error(args ...any) {
	e.err += fmt.Sprint(args...)
}
