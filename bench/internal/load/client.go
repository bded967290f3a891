package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DialFunc opens one connection to the load server, through whatever path a row measures.
type DialFunc func(ctx context.Context) (net.Conn, error)

// BulkResult is what one bulk measurement moved.
type BulkResult struct {
	Bytes   int64         // bytes received (upload: written) in the measured window
	Elapsed time.Duration // length of the measured window
}

// Gbps is the throughput in Gbit/s.
func (r BulkResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// Bulk opens streams connections in download mode (upload: in upload mode), lets them run for
// warmup (connection setup and slow start are not measured), then counts the bytes received
// (upload: written) during dur. window, if not nil, is
// called with "start" right when the measured window opens, with "mid" halfway, and with "end" when
// it closes, so callers can sample CPU time and memory of the processes on the path.
func Bulk(ctx context.Context, dial DialFunc, streams int, upload bool, warmup, dur time.Duration, window func(phase string)) (BulkResult, error) {
	mode := byte(ModeDownload)
	if upload {
		mode = ModeUpload
	}
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range streams {
		c, err := dial(ctx)
		if err != nil {
			return BulkResult{}, fmt.Errorf("bulk stream %d: dial: %w", i, err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{mode}); err != nil {
			return BulkResult{}, fmt.Errorf("bulk stream %d: write mode: %w", i, err)
		}
	}

	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, streams)
	stop := time.Now().Add(warmup + dur + 5*time.Second) // hard bound if the window is never closed
	for i, c := range conns {
		c.SetDeadline(stop)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				var n int
				var err error
				if upload {
					n, err = c.Write(buf)
				} else {
					n, err = c.Read(buf)
				}
				total.Add(int64(n))
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	// Unblock the readers however this function returns; errs may be read only after this.
	stopReaders := sync.OnceFunc(func() {
		for _, c := range conns {
			c.SetDeadline(time.Now())
		}
		wg.Wait()
	})
	defer stopReaders()

	if err := Sleep(ctx, warmup); err != nil {
		return BulkResult{}, err
	}
	if total.Load() == 0 {
		return BulkResult{}, fmt.Errorf("bulk: no data after %v warmup", warmup)
	}
	call := func(phase string) {
		if window != nil {
			window(phase)
		}
	}
	b0, t0 := total.Load(), time.Now()
	call("start")
	if err := Sleep(ctx, dur/2); err != nil {
		return BulkResult{}, err
	}
	call("mid")
	if err := Sleep(ctx, dur-dur/2); err != nil {
		return BulkResult{}, err
	}
	b1, t1 := total.Load(), time.Now()
	call("end")
	stopReaders()
	for i, err := range errs {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return BulkResult{}, fmt.Errorf("bulk stream %d ended early: %w", i, err)
		}
	}
	return BulkResult{Bytes: b1 - b0, Elapsed: t1.Sub(t0)}, nil
}

// RTT opens one echo connection and times n round trips of size bytes each, after a few unmeasured
// ones. It returns the sorted round-trip times.
func RTT(ctx context.Context, dial DialFunc, n, size int, limit time.Duration) ([]time.Duration, error) {
	const warm = 20
	out, err := roundTrips(ctx, dial, size, time.Now().Add(limit), func(i int) bool { return i < n+warm })
	if err != nil {
		return nil, err
	}
	out = out[min(warm, len(out)):]
	slices.Sort(out)
	return out, nil
}

// RTTFor is RTT for a time instead of a count: it times round trips of size bytes back to back on
// one echo connection until dur has passed (at most max of them), for round trips beside other
// traffic (a bulk run's window). It returns the sorted round-trip times.
func RTTFor(ctx context.Context, dial DialFunc, size int, dur time.Duration, max int) ([]time.Duration, error) {
	end := time.Now().Add(dur)
	// A round trip under way when dur ends may still finish, within 10 s.
	out, err := roundTrips(ctx, dial, size, end.Add(10*time.Second), func(i int) bool { return i < max && time.Now().Before(end) })
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// roundTrips opens one echo connection and times round trips of size bytes while more(i) holds for
// the next one, all within deadline. The times come back in the order they were taken.
func roundTrips(ctx context.Context, dial DialFunc, size int, deadline time.Time, more func(i int) bool) ([]time.Duration, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("rtt: dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte{ModeEcho}); err != nil {
		return nil, fmt.Errorf("rtt: write mode: %w", err)
	}
	msg, reply := make([]byte, size), make([]byte, size)
	var out []time.Duration
	for i := 0; more(i); i++ {
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, fmt.Errorf("rtt: round trip %d: write: %w", i, err)
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return nil, fmt.Errorf("rtt: round trip %d: read: %w", i, err)
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// Percentile returns the p-th percentile (0-100) of sorted durations, or 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

// ConnRate opens up to n connections one after another, each doing one 64-byte echo and closing,
// and stops early after limit. It returns connections completed per second.
func ConnRate(ctx context.Context, dial DialFunc, n int, limit time.Duration) (float64, error) {
	msg := make([]byte, 1+64)
	msg[0] = ModeEcho
	reply := make([]byte, 64)
	start := time.Now()
	done := 0
	for done < n && time.Since(start) < limit {
		c, err := dial(ctx)
		if err != nil {
			return 0, fmt.Errorf("connection %d: dial: %w", done, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, reply)
		}
		c.Close()
		if err != nil {
			return 0, fmt.Errorf("connection %d: echo: %w", done, err)
		}
		done++
	}
	return float64(done) / time.Since(start).Seconds(), nil
}

// Sleep waits for d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IdleResult is what Idle found.
type IdleResult struct {
	Open     int           // connections that completed their first echo and were held open
	Failed   int           // connections that could not be opened or did not echo
	Broken   int           // held connections that no longer echoed after hold
	OpenTime time.Duration // time to open all of them
	FirstErr error         // the first failure, if any
}

// Idle opens n connections through dial, par at a time, each in echo mode with one verified
// 1-byte echo; keeps them all open and idle while hold runs (to sample the memory of the processes
// on the path); then checks that every one still echoes, and closes them. It stops opening after
// par failures.
func Idle(ctx context.Context, dial DialFunc, n, par int, hold func()) IdleResult {
	var (
		mu    sync.Mutex
		res   IdleResult
		conns = make([]net.Conn, 0, n)
	)
	fail := func(broken bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			res.Broken++
		} else {
			res.Failed++
		}
		if res.FirstErr == nil {
			res.FirstErr = err
		}
	}
	echo := func(c net.Conn, msg []byte) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		defer c.SetDeadline(time.Time{})
		if _, err := c.Write(msg); err != nil {
			return err
		}
		var b [1]byte
		_, err := io.ReadFull(c, b[:])
		return err
	}
	// Workers take indexes from next until n are done.
	var next atomic.Int64
	// Opening stops after par failures: a path that refuses or stalls new connections (a bound on
	// streams per peer, say) would otherwise cost a dial timeout per remaining connection.
	opening := true
	gaveUp := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return res.Failed >= max(par, 1)
	}
	work := func(f func(i int)) {
		var wg sync.WaitGroup
		for range max(par, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && !(opening && gaveUp()) {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					f(i)
				}
			}()
		}
		wg.Wait()
		next.Store(0)
	}
	start := time.Now()
	work(func(i int) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := dial(dctx)
		cancel()
		if err != nil {
			fail(false, fmt.Errorf("connection %d: dial: %w", i, err))
			return
		}
		if err := echo(c, []byte{ModeEcho, 'x'}); err != nil {
			c.Close()
			fail(false, fmt.Errorf("connection %d: first echo: %w", i, err))
			return
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	})
	res.OpenTime = time.Since(start)
	res.Open = len(conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if hold != nil {
		hold()
	}
	n, opening = len(conns), false
	work(func(i int) {
		if err := echo(conns[i], []byte{'y'}); err != nil {
			fail(true, fmt.Errorf("held connection %d: echo: %w", i, err))
		}
	})
	return res
}
