package peer

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	h := StreamHeader{Proto: ProtoTCP, Port: 8080}
	b := AppendStreamHeader(nil, h)
	if len(b) != StreamHeaderSize {
		t.Fatalf("size %d", len(b))
	}
	if got, err := ParseStreamHeader(b); err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {1, 6, 0}, {2, 6, 0, 1}, {1, 17, 0, 1}, {1, 6, 0, 0}, {1, 6, 0, 1, 0}} {
		if _, err := ParseStreamHeader(bad); !errors.Is(err, ErrBadStreamHeader) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

func FuzzParseStreamHeader(f *testing.F) {
	f.Add(AppendStreamHeader(nil, StreamHeader{Proto: ProtoTCP, Port: 22}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseStreamHeader(b)
		if err == nil && string(AppendStreamHeader(nil, h)) != string(b) {
			t.Fatalf("%x does not round-trip", b)
		}
	})
}

// TestStreams: a stream reaches the accepting side with its header; a refusal is ErrStreamRefused,
// which reads as connection refused; a stranger is unreachable.
func TestStreams(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.ep.cfg.AcceptStream = func(s *IncomingStream) {
		if s.From != a.key || s.Header.Port != 7 {
			s.Refuse()
			return
		}
		c, err := s.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c) // echo
		c.(interface{ CloseWrite() error }).CloseWrite()
		c.Close()
	}
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	_, err = a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 8})
	if !errors.Is(err, ErrStreamRefused) || !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("refused port: %v", err)
	}
	if _, err := a.ep.DialStream(ctx, Key{9}, StreamHeader{Proto: ProtoTCP, Port: 7}); !errors.Is(err, ErrPeerUnreachable) || !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("stream to a stranger: %v", err)
	}
}

// TestDialStreamWaitsForLink: a dial to a peer whose link is not up yet waits for it and goes
// through once it comes up; with no link by the deadline it is unreachable, and the context's error
// says why; a peer leaving the peer set ends the wait at once.
func TestDialStreamWaitsForLink(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.ep.cfg.AcceptStream = func(s *IncomingStream) {
		if c, err := s.Accept(); err == nil {
			c.Close()
		}
	}
	// b is a's peer, but b does not know a yet: b refuses a's links, and a's dial waits.
	a.ep.SetPeers([]Info{b.info()})
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := a.ep.DialStream(short, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
	if !errors.Is(err, ErrPeerUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no link by the deadline: %v", err)
	}

	// A dial waiting when the link comes up goes through on it.
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	waiting := make(chan error, 1)
	go func() {
		c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
		if c != nil {
			c.Close()
		}
		waiting <- err
	}()
	waitForWaiter(t, a.ep, b.key)
	b.ep.SetPeers([]Info{a.info()})
	if err := <-waiting; err != nil {
		t.Fatalf("dial waiting for the link: %v", err)
	}

	// A dial waiting for a link ends when the peer is removed.
	c := newTestNode(t)
	a.ep.SetPeers([]Info{b.info(), c.info()}) // c does not know a: no link comes up
	go func() {
		_, err := a.ep.DialStream(ctx, c.key, StreamHeader{Proto: ProtoTCP, Port: 7})
		waiting <- err
	}()
	waitForWaiter(t, a.ep, c.key)
	a.ep.SetPeers([]Info{b.info()})
	if err := <-waiting; !errors.Is(err, ErrPeerUnreachable) || ctx.Err() != nil {
		t.Fatalf("dial to a removed peer: %v", err)
	}
}

// waitForWaiter returns once a DialStream waits for a link to k (nothing announces that: it polls).
func waitForWaiter(t *testing.T, e *Endpoint, k Key) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		e.mu.RLock()
		waiting := e.peers[k] != nil && e.peers[k].linkUp != nil
		e.mu.RUnlock()
		if waiting {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("no dial waits for a link")
		}
	}
}

// TestInboundStreamsBounded: a peer may have only so many streams open to us, on all its links
// together; a closed one makes room again.
func TestInboundStreamsBounded(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.ep.maxInbound = 3
	ended := make(chan struct{}, 3)
	b.ep.cfg.AcceptStream = func(s *IncomingStream) {
		c, err := s.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c) // until a closes its end
		c.Close()
		ended <- struct{}{}
	}
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var open []net.Conn
	for i := range 3 {
		c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		open = append(open, c)
	}
	defer func() {
		for _, c := range open[1:] {
			c.Close()
		}
	}()
	if c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7}); err == nil {
		c.Close()
		t.Fatal("a fourth stream was accepted")
	}
	b.ep.mu.RLock()
	inbound := b.ep.peers[a.key].inbound.Load()
	b.ep.mu.RUnlock()
	if inbound != 3 {
		t.Fatalf("b counts %d streams from a, want 3", inbound)
	}
	open[0].Close()
	select {
	case <-ended: // b closed its end: the count is down
	case <-ctx.Done():
		t.Fatal("b never saw the stream end")
	}
	c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
	if err != nil {
		t.Fatalf("no room after a stream closed: %v", err)
	}
	c.Close()
}
