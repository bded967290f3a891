package tcptun

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	sizes := []int{1, 100, 1452, MaxFrame}
	for _, n := range sizes {
		var err error
		if stream, err = AppendFrame(stream, bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(stream)
	buf := make([]byte, MaxFrame)
	for _, want := range sizes {
		n, err := ReadFrame(r, buf)
		if err != nil || n != want || buf[0] != byte(want) {
			t.Fatalf("frame of %d: got %d bytes, %v", want, n, err)
		}
	}
	if _, err := ReadFrame(r, buf); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func TestFrameBounds(t *testing.T) {
	if _, err := AppendFrame(nil, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("append %d bytes: %v", MaxFrame+1, err)
	}
	if _, err := AppendFrame(nil, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("append empty: %v", err)
	}
	buf := make([]byte, MaxFrame)
	for _, n := range []uint16{0, MaxFrame + 1, 0xffff} {
		h := binary.BigEndian.AppendUint16(nil, n)
		// No payload follows: a reader that trusted the length would wait or allocate; this one fails at once.
		if _, err := ReadFrame(bytes.NewReader(h), buf); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("length %d: %v, want ErrFrameTooLarge", n, err)
		}
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 10, 1, 2}), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short frame: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 3, 1, 2, 3})
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0x08, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		buf := make([]byte, MaxFrame)
		for {
			n, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			if n < 1 || n > MaxFrame {
				t.Fatalf("frame of %d bytes", n)
			}
			out, err := AppendFrame(nil, buf[:n])
			if err != nil || len(out) != n+2 {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}

// pair starts a Server on loopback and dials it, through proxy if set.
func pair(t *testing.T, proxy *url.URL) (*Server, *Conn) {
	t.Helper()
	sk, _ := identity.Generate()
	ck, _ := identity.Generate()
	stls, err := identity.TLSConfig(sk, "x", true, func(ed25519.PublicKey) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ServerConfig{Listener: ln, TLS: stls})
	t.Cleanup(func() { s.Close() })
	ctls, _ := identity.TLSConfig(ck, "x", false, func(pub ed25519.PublicKey) error {
		if !pub.Equal(sk.Public()) {
			return errors.New("wrong server key")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := Dial(ctx, ln.Addr().String(), ctls, proxy)
	if err != nil {
		t.Fatal(err)
	}
	remote := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	c := NewConn(tc, remote)
	t.Cleanup(func() { c.Close() })
	return s, c
}

func echoOnce(t *testing.T, s *Server, c *Conn) {
	t.Helper()
	msg := bytes.Repeat([]byte("q"), 1400)
	if _, err := c.WriteTo(msg, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxFrame)
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := s.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("server read: %d bytes, %v", n, err)
	}
	ap := from.(*net.UDPAddr).AddrPort()
	if !IsSynthetic(ap.Addr()) {
		t.Fatalf("server sees %v, want an address in %v", ap, Prefix)
	}
	if _, err := s.WriteTo([]byte("reply"), from); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, rfrom, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "reply" || rfrom.String() != "127.0.0.1:9" {
		t.Fatalf("client read %q from %v: %v", buf[:n], rfrom, err)
	}
}

func TestServerRoundTrip(t *testing.T) {
	s, c := pair(t, nil)
	echoOnce(t, s, c)
	if _, err := c.WriteTo(make([]byte, MaxFrame+1), nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
	// A deadline in the past ends a waiting read at once.
	s.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := s.ReadFrom(make([]byte, 10)); !IsTimeout(err) {
		t.Fatalf("read past deadline: %v", err)
	}
	// A stream that sends a bad length is closed; the server goes on.
	c.c.Write([]byte{0xff, 0xff})
	testkit.Eventually(t, 10*time.Second, func() bool { return s.Conns() == 0 }, "the bad stream is closed")
}

func TestServerPerSourceLimit(t *testing.T) {
	sk, _ := identity.Generate()
	stls, _ := identity.TLSConfig(sk, "x", true, func(ed25519.PublicKey) error { return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ServerConfig{Listener: ln, TLS: stls, MaxPerSource: 2})
	defer s.Close()
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The third stream from 127.0.0.1 is closed unread.
	conns[2].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[2].Read(make([]byte, 1)); err == nil || IsTimeout(err) {
		t.Fatalf("third stream: %v, want closed", err)
	}
	if n := s.Conns(); n != 2 {
		t.Fatalf("%d streams open, want 2", n)
	}
}

// connectProxy starts a CONNECT proxy with basic auth on loopback.
func connectProxy(t *testing.T, user, pass string) *url.URL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.StartConnectProxy(t, ln, user, pass, nil)
	return &url.URL{Scheme: "http", Host: ln.Addr().String(), User: url.UserPassword(user, pass)}
}

func TestThroughProxy(t *testing.T) {
	px := connectProxy(t, "alice", "s3cret")
	s, c := pair(t, px)
	echoOnce(t, s, c)

	bad := *px
	bad.User = url.UserPassword("alice", "wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Dial(ctx, s.cfg.Listener.Addr().String(), &tls.Config{}, &bad)
	if err == nil || !strings.Contains(err.Error(), "407") {
		t.Fatalf("wrong proxy password: %v", err)
	}
}

func TestProxyFromEnvironment(t *testing.T) {
	// http.ProxyFromEnvironment reads the environment once per process: only check it parses.
	if _, err := ProxyFromEnvironment("example.org:443"); err != nil {
		t.Fatal(err)
	}
}

// TestServerBlocks: a source Allow refuses is closed before its handshake; CloseFrom ends the streams
// of a source blocked later.
func TestServerBlocks(t *testing.T) {
	s, c := pair(t, nil)
	echoOnce(t, s, c)
	if n := s.CloseFrom(func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") }); n != 0 {
		t.Fatalf("CloseFrom closed %d streams of another source", n)
	}
	if n := s.CloseFrom(func(a netip.Addr) bool { return a.IsLoopback() }); n != 1 {
		t.Fatalf("CloseFrom closed %d streams, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadFrom(make([]byte, MaxFrame)); err == nil || IsTimeout(err) {
		t.Fatalf("read after CloseFrom: %v, want the stream closed", err)
	}

	sk, _ := identity.Generate()
	stls, _ := identity.TLSConfig(sk, "x", true, func(ed25519.PublicKey) error { return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	blocked := NewServer(ServerConfig{Listener: ln, TLS: stls, Allow: func(netip.Addr) bool { return false }})
	defer blocked.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, ln.Addr().String(), stls, nil); err == nil {
		t.Fatal("a blocked source finished its handshake")
	}
}

// TestServerIdleTimeout: a stream that completes its handshake and then sends nothing is closed
// after IdleTimeout, so silent clients cannot hold the server's slots; one that keeps sending frames
// stays open past it.
func TestServerIdleTimeout(t *testing.T) {
	sk, _ := identity.Generate()
	ck, _ := identity.Generate()
	stls, _ := identity.TLSConfig(sk, "x", true, func(ed25519.PublicKey) error { return nil })
	ctls, _ := identity.TLSConfig(ck, "x", false, func(ed25519.PublicKey) error { return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 2 * time.Second
	s := NewServer(ServerConfig{Listener: ln, TLS: stls, IdleTimeout: idle})
	defer s.Close()
	dial := func() *Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tc, err := Dial(ctx, ln.Addr().String(), ctls, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := NewConn(tc, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
		t.Cleanup(func() { c.Close() })
		return c
	}
	busy, silent := dial(), dial()
	for _, c := range []*Conn{busy, silent} {
		if _, err := c.WriteTo([]byte("hello"), nil); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return s.Conns() == 2 }, "both streams are open")
	// The busy stream sends a frame every 100 ms (a twentieth of the idle timeout) until the silent
	// one is closed, and for one more idle timeout after that. The sleep is the traffic's pace, not
	// an ordering of events: the stream is real TCP and TLS, which synctest's clock cannot drive,
	// and only a pause of 2 s between two frames would make the busy stream look idle.
	var closedAt time.Time
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, err := busy.WriteTo([]byte("still here"), nil); err != nil {
			t.Fatalf("the busy stream: %v", err)
		}
		if n := s.Conns(); n == 0 {
			t.Fatal("the busy stream was closed as idle")
		} else if n == 1 && closedAt.IsZero() {
			closedAt = time.Now()
		}
		if !closedAt.IsZero() && time.Since(closedAt) > idle {
			break
		}
		if time.Since(start) > 30*time.Second { // a safety net, far past 2 s
			t.Fatalf("the silent stream is still open after %v (idle timeout %v)", time.Since(start), idle)
		}
	}
}
