package bicopy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// shortQuiet makes socket directions park after a few milliseconds of quiet for the test.
func shortQuiet(t *testing.T) {
	old := quietAfter
	quietAfter = 5 * time.Millisecond
	t.Cleanup(func() { quietAfter = old })
}

// parkedNow is how many sockets wait in the poller, and whether its goroutine runs.
func parkedNow() (n int, running bool) {
	canPark() // the poller's fields are set up once, first
	p := &thePoller
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked), p.running
}

func waitParked(t *testing.T, want int, what string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { n, _ := parkedNow(); return n == want },
		"%s: parked sockets never reached %d", what, want)
}

// waitPollerGone waits until no socket is parked and the poller's goroutine has ended.
func waitPollerGone(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { n, running := parkedNow(); return n == 0 && !running },
		"the poller still runs with no socket parked")
}

// startRelay relays between two TCP pairs (app ↔ relay ↔ backend) with Start; done closes when
// the relay has ended and closed its ends.
func startRelay(t *testing.T) (app, backend net.Conn, r *Relay, done <-chan struct{}) {
	t.Helper()
	app, in := tcpPair(t)
	out, backend := tcpPair(t)
	ch := make(chan struct{})
	r = Start(in, nil, out, func() {
		in.Close()
		out.Close()
		close(ch)
	})
	t.Cleanup(func() { app.Close(); backend.Close(); r.Close() })
	return app, backend, r, ch
}

// TestQuietSocketsPark: both directions of a relay between sockets park once quiet (no goroutine,
// no buffer), wake for data whichever way it comes, small or bulk, park again, and a half-close
// that reaches a parked direction passes on as one.
func TestQuietSocketsPark(t *testing.T) {
	shortQuiet(t)
	app, backend, _, done := startRelay(t)
	waitParked(t, 2, "a fresh relay")
	waitHeld(t, 0, "parked")
	exchange(t, app, backend, []byte("hello"))
	exchange(t, backend, app, []byte("and back"))
	waitParked(t, 2, "after a round trip")
	bulk := make([]byte, 1<<20) // copyBusy's reads are bounded too: the next quiet parks again
	rand.Read(bulk)
	go app.Write(bulk)
	backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(bulk))
	if _, err := io.ReadFull(backend, got); err != nil || !bytes.Equal(got, bulk) {
		t.Fatalf("bulk: %v (equal: %v)", err, bytes.Equal(got, bulk))
	}
	waitParked(t, 2, "after bulk")

	app.(*net.TCPConn).CloseWrite() // wakes app→backend with EOF: backend's read side ends
	backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := backend.Read(got); err != io.EOF {
		t.Fatalf("backend read %d bytes, %v; want EOF", n, err)
	}
	exchange(t, backend, app, []byte("still answering")) // the other way still works
	backend.Close()
	wait(t, done, "both sides closed")
	waitPollerGone(t)
}

// TestParkedRelayCloses: Close ends a relay whose directions are both parked.
func TestParkedRelayCloses(t *testing.T) {
	shortQuiet(t)
	app, _, r, done := startRelay(t)
	waitParked(t, 2, "a fresh relay")
	r.Close()
	wait(t, done, "Close")
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := app.Read(make([]byte, 1)); err == nil {
		t.Fatal("the app's connection still open after Close")
	}
	waitPollerGone(t)
}

// TestParkedSocketReset: a reset reaches a parked direction; it closes both sides and ends the relay,
// the other direction being parked too.
func TestParkedSocketReset(t *testing.T) {
	shortQuiet(t)
	app, backend, _, done := startRelay(t)
	waitParked(t, 2, "a fresh relay")
	app.(*net.TCPConn).SetLinger(0)
	app.Close() // RST
	wait(t, done, "a reset")
	backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(backend); err != nil {
		t.Logf("backend ended with %v", err)
	}
	waitPollerGone(t)
}

// TestParkedSocketAndPeeker is node A's relay: a socket that parks, and a peeker (a QUIC stream)
// whose direction keeps its goroutine; the peeker's end closes the socket's write side, a parked
// socket still hears the app's data, and the peeker's error ends the parked direction.
func TestParkedSocketAndPeeker(t *testing.T) {
	shortQuiet(t)
	app, in := tcpPair(t)
	defer app.Close()
	s1, s2 := net.Pipe() // s2 is the relay's stream end, read through a peeker
	done := make(chan struct{})
	Start(in, nil, newPipePeeker(s2), func() { in.Close(); close(done) })
	waitParked(t, 1, "the socket side")
	go s1.Write([]byte("from the stream"))
	got := make([]byte, len("from the stream"))
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(app, got); err != nil {
		t.Fatal(err)
	}
	app.Write([]byte("to the stream")) // wakes the parked socket direction
	got = make([]byte, len("to the stream"))
	s1.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s1, got); err != nil || string(got) != "to the stream" {
		t.Fatalf("%q, %v", got, err)
	}
	waitParked(t, 1, "quiet again")
	s1.Close() // the stream ends: a pipe reads EOF, the socket gets a CloseWrite, the relay goes on
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := app.Read(got); err != io.EOF {
		t.Fatalf("app read %d, %v; want EOF", n, err)
	}
	app.Close() // EOF for the parked direction: its write to the closed pipe fails or it ends
	wait(t, done, "the app closed")
	waitPollerGone(t)
}

// TestManyParked: many relays park at once and each wakes for its own data only.
func TestManyParked(t *testing.T) {
	shortQuiet(t)
	const n = 100
	apps, backends := make([]net.Conn, n), make([]net.Conn, n)
	dones := make([]<-chan struct{}, n)
	for i := range n {
		apps[i], backends[i], _, dones[i] = startRelay(t)
	}
	waitParked(t, 2*n, "all relays")
	for i := range n {
		exchange(t, apps[i], backends[i], []byte{byte(i)})
	}
	for i := range n {
		exchange(t, backends[i], apps[i], []byte{byte(i), 1})
	}
	waitParked(t, 2*n, "all relays again")
	for i := range n {
		apps[i].Close()
		backends[i].Close()
	}
	for i := range n {
		wait(t, dones[i], "closed")
	}
	waitPollerGone(t)
}

// TestParkRefused: when the epoll set refuses a socket (fs.epoll.max_user_watches reached), its
// direction keeps its goroutine, relays as before, and stops trying to park (no wake-up every
// quietAfter for nothing).
func TestParkRefused(t *testing.T) {
	shortQuiet(t)
	var tries atomic.Int32
	epollCtl = func(int, int, int, *syscall.EpollEvent) error { tries.Add(1); return syscall.ENOSPC }
	defer func() { epollCtl = syscall.EpollCtl }()
	app, backend, _, done := startRelay(t)
	testkit.Eventually(t, 10*time.Second, func() bool { return tries.Load() == 2 }, "both directions tried to park")
	exchange(t, app, backend, []byte("hello"))
	exchange(t, backend, app, []byte("and back"))
	time.Sleep(20 * quietAfter) // a negative check: a retry would have come several times by now
	if n := tries.Load(); n != 2 {
		t.Errorf("%d attempts to park, want 2 (one per direction)", n)
	}
	if n, _ := parkedNow(); n != 0 {
		t.Errorf("%d sockets parked", n)
	}
	app.Close()
	backend.Close()
	wait(t, done, "both sides closed")
}

// TestHalfClosedParkedRelayCloses: after the peeker side ended (EOF, the socket's write side shut)
// the socket direction parks alone; Relay.Close, what node and netstack call on Close, ends it
// (closing the connections directly would not: a closed descriptor leaves the epoll set silently).
func TestHalfClosedParkedRelayCloses(t *testing.T) {
	shortQuiet(t)
	app, in := tcpPair(t)
	defer app.Close()
	s1, s2 := net.Pipe()
	done := make(chan struct{})
	r := Start(newPipePeeker(s2), nil, in, func() { close(done) })
	waitParked(t, 1, "the socket side")
	s1.Close() // the peeker's EOF: its direction ends with a CloseWrite on in
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := app.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("app read %d, %v; want EOF", n, err)
	}
	waitParked(t, 1, "the socket side, alone")
	r.Close()
	wait(t, done, "Relay.Close of a half-closed relay")
	waitPollerGone(t)
}

// TestGroupClosesParked: a Group's Close ends relays whose directions are all parked, which closing
// their sockets directly would not reach, and returns once they have ended.
func TestGroupClosesParked(t *testing.T) {
	shortQuiet(t)
	var g Group
	var ended atomic.Int32
	app1, _ := groupRelay(t, &g, func() { ended.Add(1) })
	app2, _ := groupRelay(t, &g, func() { ended.Add(1) })
	waitParked(t, 4, "two fresh relays")
	closeWithin(t, &g)
	if got := ended.Load(); got != 2 {
		t.Fatalf("Close returned with %d of 2 done callbacks run", got)
	}
	readEnds(t, app1, "app 1")
	readEnds(t, app2, "app 2")
	waitPollerGone(t)
}
