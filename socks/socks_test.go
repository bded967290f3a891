package socks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// startServer runs a Server whose Dial reaches real loopback listeners; names map via the table.
func startServer(t testing.TB, names map[string]netip.Addr, maxConns int) (*Server, string) {
	t.Helper()
	s, err := New(Config{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		Resolve: func(_ context.Context, name string) (netip.Addr, error) {
			if ip, ok := names[name]; ok {
				return ip, nil
			}
			return netip.Addr{}, fmt.Errorf("%w: %s", ErrUnknownName, name)
		},
		MaxConns: maxConns,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, s)
}

// connect performs a SOCKS5 CONNECT and returns the connection and the reply code.
func connect(t testing.TB, proxy, host string, port uint16) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		req = append(req, 1)
		req = append(req, ip.AsSlice()...)
	} else {
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var resp [2 + 10]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if resp[0] != 5 || resp[1] != 0 {
		t.Fatalf("method reply %v", resp[:2])
	}
	c.SetDeadline(time.Time{})
	return c, resp[3]
}

// echoServer echoes until EOF, then closes its write side.
func echoServer(t testing.TB) (netip.AddrPort, func() int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), nil
}

func TestConnectByIPAndNameWithHalfClose(t *testing.T) {
	echo, _ := echoServer(t)
	_, proxy := startServer(t, map[string]netip.Addr{"b.warren": echo.Addr()}, 0)
	for _, host := range []string{echo.Addr().String(), "b.warren"} {
		c, code := connect(t, proxy, host, echo.Port())
		if code != 0 {
			t.Fatalf("%s: reply %d", host, code)
		}
		msg := make([]byte, 256<<10)
		rand.Read(msg)
		go func() {
			c.Write(msg)
			c.(*net.TCPConn).CloseWrite() // half-close: the answer must still arrive in full
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo got %d bytes, err %v", host, len(got), err)
		}
	}
}

// TestPipelinedData: a client that sends its first bytes in the same write as the greeting and the
// request, before any reply (bytes the handshake's readers buffered), gets all of them relayed.
func TestPipelinedData(t *testing.T) {
	echo, _ := echoServer(t)
	_, proxy := startServer(t, nil, 0)
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := make([]byte, 64<<10)
	rand.Read(msg)
	req := append([]byte{5, 1, 0, 5, 1, 0, 1}, echo.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, echo.Port())
	if _, err := c.Write(append(req, msg...)); err != nil {
		t.Fatal(err)
	}
	var resp [2 + 10]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil || resp[3] != 0 {
		t.Fatalf("reply %v, err %v", resp, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: err %v, equal %v", err, bytes.Equal(got, msg))
	}
}

// errnoError is how the netstack and peer streams report a failed dial: a text of their own that
// matches a syscall errno with errors.Is.
type errnoError struct {
	text  string
	errno syscall.Errno
}

func (e *errnoError) Error() string          { return e.text }
func (e *errnoError) Is(target error) bool   { return target == e.errno }
func opError(err error) error                { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
func syscallError(errno syscall.Errno) error { return opError(os.NewSyscallError("connect", errno)) }

// TestReplyCodes pins the SOCKS reply each kind of dial failure gets, as a client reads it: the
// reply follows what the error matches, never its text.
func TestReplyCodes(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cases := []struct {
		name string
		err  error // what Dial returns; nil = dial a closed loopback port for real
		want byte
	}{
		{"host dialer, closed port", nil, 5},
		{"connection refused (errno)", syscallError(syscall.ECONNREFUSED), 5},
		{"netstack: remote stack reset", opError(&errnoError{"connection refused", syscall.ECONNREFUSED}), 5},
		{"peer: stream refused", &errnoError{"connection refused by peer (port not exposed or not listening)", syscall.ECONNREFUSED}, 5},
		{"network unreachable", syscallError(syscall.ENETUNREACH), 3},
		{"netstack: network unreachable", opError(&errnoError{"network is unreachable", syscall.ENETUNREACH}), 3},
		{"not allowed", fmt.Errorf("%w: 127.0.0.1 is this host", ErrNotAllowed), 2},
		{"host unreachable", syscallError(syscall.EHOSTUNREACH), 4},
		{"peer: no link", fmt.Errorf("%w: no link to peer x: %w", &errnoError{"host unreachable", syscall.EHOSTUNREACH}, context.DeadlineExceeded), 4},
		{"timed out", syscallError(syscall.ETIMEDOUT), 4},
		{"dial deadline", context.DeadlineExceeded, 4},
		{"text alone says refused", errors.New("connection refused"), 4},
	}
	byPort := make(map[string]error)
	for i, c := range cases {
		if c.err != nil {
			byPort[strconv.Itoa(10000+i)] = c.err
		}
	}
	s, err := New(Config{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			if err, ok := byPort[port]; ok {
				return nil, err
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		Resolve: func(_ context.Context, name string) (netip.Addr, error) {
			return netip.Addr{}, fmt.Errorf("%w: %s", ErrUnknownName, name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	proxy := serve(t, s)
	for i, c := range cases {
		port := uint16(10000 + i)
		if c.err == nil {
			port = closed
		}
		conn, code := connect(t, proxy, "127.0.0.1", port)
		conn.Close()
		if code != c.want {
			t.Errorf("%s: reply %d, want %d", c.name, code, c.want)
		}
	}
	conn, code := connect(t, proxy, "nobody.warren", 80)
	conn.Close()
	if code != 4 {
		t.Errorf("unknown name: reply %d, want 4", code)
	}
}

// serve runs s on a loopback listener until the test ends and returns its address.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// TestCloseEndsDial: Close does not wait for dials under way (a peer that never answers would hold
// it for DialTimeout): their context ends, over SOCKS and HTTP CONNECT alike.
func TestCloseEndsDial(t *testing.T) {
	for _, proto := range []string{"socks", "http"} {
		t.Run(proto, func(t *testing.T) {
			defer testkit.VerifyNone(t)()
			dialing := make(chan struct{}, 1)
			s, err := New(Config{
				Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
					dialing <- struct{}{}
					<-ctx.Done() // a dial that hangs until it is told to stop
					return nil, ctx.Err()
				},
				DialTimeout: time.Hour,
			})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(ln) }()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if proto == "socks" {
				c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
			} else {
				io.WriteString(c, "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n")
			}
			<-dialing
			closed := make(chan struct{})
			go func() {
				s.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(10 * time.Second): // a safety net: the dial would hold Close for an hour
				t.Fatal("Close waits for a hanging dial")
			}
			if err := <-served; err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
		})
	}
}

func TestMaxConnsAndClose(t *testing.T) {
	t.Cleanup(testkit.VerifyNone(t)) // the first cleanup runs last: after the echo server's
	echo, _ := echoServer(t)
	s, proxy := startServer(t, nil, 2)
	var open []net.Conn
	for i := 0; i < 2; i++ {
		c, code := connect(t, proxy, echo.Addr().String(), echo.Port())
		if code != 0 {
			t.Fatalf("reply %d", code)
		}
		open = append(open, c)
	}
	// The third is closed at once.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte{5, 1, 0})
	if n, err := c.Read(make([]byte, 2)); err == nil {
		t.Errorf("third client got %d bytes, want closed", n)
	}
	c.Close()
	if s.Rejected() != 1 || s.ActiveConns() != 2 {
		t.Errorf("rejected %d active %d", s.Rejected(), s.ActiveConns())
	}
	s.Close()
	s.Close()
	for _, c := range open {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Errorf("client not closed by Close: %v", err)
		}
		c.Close()
	}
}

// TestRelayOutlivesHandshakeGoroutine: once a SOCKS5 or HTTP CONNECT is answered, the relay runs
// on goroutines of its own and the handshake's goroutine (whose stack grew deep in the handshake and
// the dial) ends, so an idle connection does not hold its stack; the connection keeps working, and
// the server counts it until the client leaves.
func TestRelayOutlivesHandshakeGoroutine(t *testing.T) {
	echo, _ := echoServer(t)
	for _, tc := range []struct {
		name, frame string // frame: a function of the handshake's goroutine
		open        func(t *testing.T, proxy string) net.Conn
	}{
		{"socks5", "go-socks5.(*Server).ServeConn", func(t *testing.T, proxy string) net.Conn {
			c, code := connect(t, proxy, echo.Addr().String(), echo.Port())
			if code != 0 {
				t.Fatalf("reply %d", code)
			}
			return c
		}},
		{"http", "socks.(*httpProxy).serve", func(t *testing.T, proxy string) net.Conn {
			c, err := net.Dial("tcp", proxy)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "CONNECT %v HTTP/1.1\r\nHost: %v\r\n\r\n", echo, echo)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, proxy := startServer(t, nil, 10)
			c := tc.open(t, proxy)
			defer c.Close()
			testkit.Eventually(t, 10*time.Second, func() bool { return !strings.Contains(allStacks(), tc.frame) },
				"the handshake's goroutine still runs while the relay holds the connection")
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo through the relay: %q, %v", got, err)
			}
			if n := s.ActiveConns(); n != 1 {
				t.Errorf("%d active connections while the relay runs, want 1", n)
			}
			c.Close()
			testkit.Eventually(t, 10*time.Second, func() bool { return s.ActiveConns() == 0 }, "the relay's connection is still counted after the client left")
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	s, err := New(Config{Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no") }, HandshakeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("silent client was not dropped: %v", err)
	}
}

// FuzzHandshake feeds arbitrary client bytes over an in-memory pipe; the server must answer or close,
// never panic or hang.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 8, 'b', '.', 'w', 'a', 'r', 'r', 'e', 'n', 0, 22})
	f.Add([]byte{5, 1, 0, 5, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Add([]byte("GET http://b.warren:80/ HTTP/1.1\r\nHost: b.warren\r\n\r\n"))
	f.Add([]byte("CONNECT b.warren:22 HTTP/1.1\r\nHost: b.warren:22\r\nProxy-Authorization: Basic YTpi\r\n\r\n"))
	s, err := New(Config{
		Dial:             func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("connection refused") },
		Resolve:          func(context.Context, string) (netip.Addr, error) { return netip.Addr{}, ErrUnknownName },
		HandshakeTimeout: time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.serveConn(server)
			server.Close()
			close(done)
		}()
		go func() {
			client.Write(in)
			client.Close() // end of input: the server sees EOF
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("server neither answered nor closed")
		}
	})
}

func BenchmarkConnectThroughput(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	_, proxy := startServer(b, nil, 0)
	sink := netip.MustParseAddrPort(ln.Addr().String())
	c, code := connect(b, proxy, sink.Addr().String(), sink.Port())
	if code != 0 {
		b.Fatal(code)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
}

// BenchmarkIdleRelayMemory reports what an idle CONNECT costs the proxy once its handshake is over:
// goroutine stack and heap per connection (runtime.MemStats), with 1,000 connections held, each
// after one short write and a quiet second. Both of a relay's directions read sockets here, so
// neither holds a buffer or, once parked in bicopy's epoll set, a goroutine: no stack per
// connection on Linux (BENCHMARKS.md, "Memory per idle connection"; about 4 KiB before stop 29).
func BenchmarkIdleRelayMemory(b *testing.B) {
	const conns = 1000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn // the sink holds its ends without a goroutine each, so they cost no stack
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	s, proxy := startServer(b, nil, 0)
	sink := netip.MustParseAddrPort(ln.Addr().String())
	measure := func() (stack, heap uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse, ms.HeapInuse
	}
	var stackPer, heapPer float64
	for range b.N {
		stack0, heap0 := measure()
		clients := make([]net.Conn, 0, conns)
		for range conns {
			c, code := connect(b, proxy, sink.Addr().String(), sink.Port())
			if code != 0 {
				b.Fatalf("reply %d", code)
			}
			c.Write([]byte("ping"))
			clients = append(clients, c)
		}
		testkit.Eventually(b, 30*time.Second, func() bool { return !strings.Contains(allStacks(), "go-socks5.(*Server).ServeConn") },
			"handshake goroutines still running")
		// Both directions read sockets: after a quiet second each parks in bicopy's epoll set.
		testkit.Eventually(b, 30*time.Second, func() bool { return !strings.Contains(allStacks(), "bicopy.(*direction).run") },
			"relay goroutines still waiting on their sockets")
		stack1, heap1 := measure()
		stackPer = float64(int64(stack1)-int64(stack0)) / conns
		heapPer = float64(int64(heap1)-int64(heap0)) / conns
		for _, c := range clients {
			c.Close()
		}
		mu.Lock() // the relays half-close towards the sink: its ends must close too
		for _, c := range held {
			c.Close()
		}
		held = held[:0]
		mu.Unlock()
		testkit.Eventually(b, 30*time.Second, func() bool { return s.ActiveConns() == 0 }, "relays still running")
	}
	b.ReportMetric(stackPer, "stack-B/conn")
	b.ReportMetric(heapPer, "heap-B/conn")
}

// allStacks returns every goroutine's stack trace.
func allStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
