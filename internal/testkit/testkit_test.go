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
