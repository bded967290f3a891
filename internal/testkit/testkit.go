// Package testkit holds what many packages' tests share: a logger that writes into the test's own
// output, and the goroutine-leak check. Only tests import it.
package testkit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

// Writer returns an io.Writer that logs each write as one line of t's output (shown with -v or when
// the test fails).
func Writer(t testing.TB) io.Writer { return tWriter{t} }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// Logger returns a debug-level logger named name that writes into t's output.
func Logger(t testing.TB, name string) hclog.Logger {
	return LoggerAt(t, name, hclog.Debug)
}

// LoggerAt is Logger at another level.
func LoggerAt(t testing.TB, name string, level hclog.Level) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: tWriter{t}})
}

// ignored lists goroutines that outlive any one test by design: the race detector's and the
// runtime's own, and database/sql's connection opener, which lives until its DB is closed.
var ignored = []goleak.Option{
	goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
}

// VerifyNone fails t if goroutines other than those running when it was called are still alive
// when it returns (it waits for them up to leakWait, so goroutines on their way out are not
// counted). Call it first in a test, deferred: defer testkit.VerifyNone(t)().
func VerifyNone(t testing.TB) func() {
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, ignored...)
	return func() {
		t.Helper()
		if err := findLeaks(opts...); err != nil {
			t.Error(err)
		}
	}
}

// VerifyTestMain runs a package's tests and fails the run if any goroutine is left when they end.
// Use it as the package's TestMain: func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := findLeaks(ignored...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakWait is how long the leak checks wait for goroutines to end: a safety net for a loaded machine.
var leakWait = 10 * time.Second

// findLeaks is goleak.Find with opts, repeated until it finds no goroutine or leakWait has passed; it
// returns Find's last report. Find alone gives up after some 0.43 s of retries, less than a loaded
// machine may take to end a goroutine on its way out (a quic-go transport closing in a dial
// goroutine after Close returned); a goroutine that does not end is still reported.
func findLeaks(opts ...goleak.Option) error {
	deadline := time.Now().Add(leakWait)
	for {
		err := goleak.Find(opts...) // retries (sleeping) for a while itself
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// Eventually waits until cond returns true, checking it at once and then at growing intervals (up to
// 50 ms), and fails t with what if it is still false after timeout. It is for conditions a test
// cannot be told about (a count in another process, a row a background loop removes); the timeout is
// a safety net for a loaded machine, not a measure of anything: pass a generous one.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, fmt.Sprintf(what, args...))
		}
		<-time.After(wait)
	}
}
