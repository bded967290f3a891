package peer

import (
	"context"
	"errors"
	"io"
	"net"
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

// TestStreams: a stream reaches the accepting side with its header; a refusal reads as connection refused.
func TestStreams(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.ep.cfg.AcceptStream = func(from Key, h StreamHeader, c net.Conn) {
		if from != a.key || h.Port != 7 {
			Refuse(c)
			return
		}
		Accept(c)
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
	if _, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 8}); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("refused port: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := a.ep.DialStream(short, Key{9}, StreamHeader{Proto: ProtoTCP, Port: 7}); err == nil {
		t.Error("stream to a stranger")
	}
}

// TestInboundStreamsBounded: a peer may have only so many streams open to us, on all its links
// together; a closed one makes room again.
func TestInboundStreamsBounded(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.ep.maxInbound = 3
	b.ep.cfg.AcceptStream = func(from Key, h StreamHeader, c net.Conn) {
		Accept(c)
		io.Copy(io.Discard, c) // until a closes its end
		c.Close()
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
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := a.ep.DialStream(ctx, b.key, StreamHeader{Proto: ProtoTCP, Port: 7})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a stream closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
