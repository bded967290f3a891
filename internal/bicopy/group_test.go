package bicopy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// groupRelay relays between two TCP pairs (app ↔ relay ↔ backend) in g; the relay's done closes
// its ends, then runs done (if not nil).
func groupRelay(t *testing.T, g *Group, done func()) (app, backend net.Conn) {
	t.Helper()
	app, in := tcpPair(t)
	out, backend := tcpPair(t)
	t.Cleanup(func() { app.Close(); backend.Close() })
	if !g.Start(in, nil, out, func() {
		in.Close()
		out.Close()
		if done != nil {
			done()
		}
	}) {
		t.Fatal("Start refused by a Group not closed")
	}
	return app, backend
}

// running is how many relays g holds.
func (g *Group) running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.relays)
}

// readEnds reads c until it ends (EOF, or an error such as a reset), which it must within 10 s.
func readEnds(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ne net.Error
	if _, err := io.ReadAll(c); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after 10 s", what)
	}
}

// closeWithin closes g, which must return within 10 s.
func closeWithin(t *testing.T, g *Group) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		g.Close()
		close(closed)
	}()
	wait(t, closed, "Group.Close")
}

// TestGroupClose: relays started in a zero Group carry bytes; Close ends them all, and by the time
// it returns every done callback has run and the group holds none; a second Close is a no-op.
func TestGroupClose(t *testing.T) {
	var g Group
	var ended atomic.Int32
	const n = 3
	apps := make([]net.Conn, n)
	for i := range apps {
		app, backend := groupRelay(t, &g, func() { ended.Add(1) })
		exchange(t, app, backend, []byte("ping"))
		exchange(t, backend, app, []byte("pong"))
		apps[i] = app
	}
	if got := g.running(); got != n {
		t.Fatalf("%d relays running, want %d", got, n)
	}
	closeWithin(t, &g)
	if got := ended.Load(); got != n {
		t.Fatalf("Close returned with %d of %d done callbacks run", got, n)
	}
	if got := g.running(); got != 0 {
		t.Fatalf("%d relays left after Close", got)
	}
	for _, app := range apps {
		readEnds(t, app, "app after Close")
	}
	g.Close()
	if got := ended.Load(); got != n {
		t.Fatalf("a second Close: %d done callbacks, want %d", got, n)
	}
}

// TestGroupRelayEndsAlone: a relay that ends by itself runs done once and leaves the group; Close
// has nothing left to close.
func TestGroupRelayEndsAlone(t *testing.T) {
	var g Group
	var ended atomic.Int32
	done := make(chan struct{})
	app, backend := groupRelay(t, &g, func() {
		ended.Add(1)
		close(done)
	})
	exchange(t, app, backend, []byte("hello"))
	app.Close()
	backend.Close()
	wait(t, done, "both sides closed")
	if got := g.running(); got != 0 {
		t.Fatalf("%d relays still in the group after the relay ended", got)
	}
	g.Close()
	if got := ended.Load(); got != 1 {
		t.Fatalf("done ran %d times, want 1", got)
	}
}

// TestGroupStartAfterClose: Start after Close starts nothing, closes both connections, runs done
// before it returns and reports false; a nil done is fine too.
func TestGroupStartAfterClose(t *testing.T) {
	var g Group
	g.Close()
	a, aPeer := net.Pipe()
	b, bPeer := net.Pipe()
	ran := 0
	if g.Start(a, nil, b, func() { ran++ }) {
		t.Fatal("Start after Close reported true")
	}
	if ran != 1 {
		t.Fatalf("done ran %d times before Start returned, want 1", ran)
	}
	for _, c := range []net.Conn{aPeer, bPeer} {
		if _, err := c.Read(make([]byte, 1)); err != io.EOF { // a net.Pipe's peer is closed: EOF
			t.Fatalf("peer read: %v, want EOF (the connection closed)", err)
		}
	}
	if got := g.running(); got != 0 {
		t.Fatalf("%d relays in a closed group", got)
	}
	c, d := net.Pipe()
	if g.Start(c, nil, d, nil) {
		t.Fatal("Start after Close reported true (nil done)")
	}
}

// TestGroupCloseWaitsForDone: Close returns only once every done callback has returned, even when
// they are slow to: each blocks until all relays' callbacks have begun.
func TestGroupCloseWaitsForDone(t *testing.T) {
	var g Group
	const n = 8
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	var finished atomic.Int32
	for range n {
		groupRelay(t, &g, func() {
			entered <- struct{}{}
			<-release
			finished.Add(1)
		})
	}
	go func() {
		for range n {
			<-entered
		}
		close(release)
	}()
	g.Close()
	if got := finished.Load(); got != n {
		t.Fatalf("Close returned with %d of %d done callbacks finished", got, n)
	}
}

// TestGroupStartCloseRace: Starts racing with Close (run with -race) either start a relay that
// Close then ends and waits for, or are refused; either way every done has run once by the time
// Close and the Starts have returned, and every connection is closed.
func TestGroupStartCloseRace(t *testing.T) {
	for range 20 {
		var g Group
		const n = 16
		var ended atomic.Int32
		peers := make([]net.Conn, 0, 2*n)
		var starts sync.WaitGroup
		begin := make(chan struct{})
		for range n {
			a, aPeer := net.Pipe()
			b, bPeer := net.Pipe()
			peers = append(peers, aPeer, bPeer)
			starts.Add(1)
			go func() {
				defer starts.Done()
				<-begin
				g.Start(a, nil, b, func() { ended.Add(1) })
			}()
		}
		closed := make(chan struct{})
		go func() {
			<-begin
			g.Close()
			close(closed)
		}()
		close(begin)
		starts.Wait()
		<-closed
		if got := ended.Load(); got != n {
			t.Fatalf("%d of %d done callbacks ran by the time Close and every Start returned", got, n)
		}
		if got := g.running(); got != 0 {
			t.Fatalf("%d relays left after Close", got)
		}
		for _, c := range peers {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer read: %v, want EOF (the connection closed)", err)
			}
		}
	}
}
