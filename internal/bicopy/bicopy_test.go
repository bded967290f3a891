package bicopy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return client, <-ch
}

// relayPair relays between two TCP pairs as a proxy does: app ↔ Copy ↔ backend; done closes when
// Copy has returned and closed its ends.
func relayPair(t *testing.T) (app, backend net.Conn, done <-chan struct{}) {
	app, proxyIn := tcpPair(t)
	proxyOut, backend := tcpPair(t)
	ch := make(chan struct{})
	go func() {
		Copy(proxyIn, nil, proxyOut)
		proxyIn.Close()
		proxyOut.Close()
		close(ch)
	}()
	return app, backend, ch
}

// TestHalfClose: a client that sends, then shuts down its write side, still receives the full answer
// that the far side writes after seeing EOF.
func TestHalfClose(t *testing.T) {
	app, backend, done := relayPair(t)
	go func() { // backend: read everything, then answer with it reversed in size
		got, _ := io.ReadAll(backend)
		backend.Write(bytes.Repeat([]byte{'x'}, len(got)*2))
		backend.Close()
	}()
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	app.Write(msg)
	app.(*net.TCPConn).CloseWrite()
	app.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(app)
	if err != nil || len(resp) != 2*len(msg) {
		t.Fatalf("got %d bytes, err %v", len(resp), err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Copy did not return")
	}
}

// TestErrorClosesBoth: when one side resets, the other is closed and Copy returns.
func TestErrorClosesBoth(t *testing.T) {
	a, aPeer := tcpPair(t)
	b, bPeer := tcpPair(t)
	done := make(chan struct{})
	go func() { Copy(a, nil, b); close(done) }()
	aPeer.(*net.TCPConn).SetLinger(0)
	aPeer.Close() // RST towards a
	bPeer.Write([]byte("data that cannot be delivered"))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Copy did not return after a reset")
	}
	bPeer.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(bPeer); err != nil {
		t.Logf("b side ended with %v", err)
	}
}

// chunkReader returns its chunks one Read at a time (cut to the buffer if it is smaller) and records
// the buffer size of every Read.
type chunkReader struct {
	chunks [][]byte
	sizes  []int
}

func (r *chunkReader) Read(b []byte) (int, error) {
	r.sizes = append(r.sizes, len(b))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.chunks[0])
	if n == len(r.chunks[0]) {
		r.chunks = r.chunks[1:]
	} else {
		r.chunks[0] = r.chunks[0][n:]
	}
	return n, nil
}

// Peek copies the start of the current chunk without consuming it; a chunkReader as a peeker, so
// copyPeeking can be fed the same chunks. It does not record a buffer size.
func (r *chunkReader) Peek(b []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.chunks[0])
	if n < len(b) {
		return n, errors.New("chunkReader: Peek past a chunk")
	}
	return n, nil
}

// TestAdaptiveBuffers: a direction reads into the small buffer until a read fills it, then into a
// large one until reads come back short again, and copies every byte in order either way; whether
// it holds its small buffer (copyBuffered) or peeks before taking one (copyPeeking).
func TestAdaptiveBuffers(t *testing.T) {
	for name, copy := range map[string]func(io.Writer, *chunkReader) error{
		"buffered": func(w io.Writer, r *chunkReader) error { return copyBuffered(w, r) },
		"peeking":  func(w io.Writer, r *chunkReader) error { return copyPeeking(w, r) },
	} {
		t.Run(name, func(t *testing.T) { testAdaptiveBuffers(t, copy) })
	}
}

func testAdaptiveBuffers(t *testing.T, copy func(io.Writer, *chunkReader) error) {
	data := make([]byte, 3*bigSize)
	rand.Read(data)
	// 100 bytes (quiet), 2 KiB (fills small: switch to big), 200 KiB arrives (read as 128 KiB + 72 KiB),
	// 10 bytes (quiet again: back to small), then the rest in one piece.
	cuts := []int{100, smallSize, 200 << 10, 10}
	r := &chunkReader{}
	off := 0
	for _, c := range cuts {
		r.chunks = append(r.chunks, data[off:off+c])
		off += c
	}
	r.chunks = append(r.chunks, data[off:])
	var out bytes.Buffer
	if err := copy(&out, r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("copied bytes differ")
	}
	want := []int{smallSize, smallSize, bigSize, bigSize, bigSize, smallSize, bigSize, bigSize}
	if len(r.sizes) < len(want) {
		t.Fatalf("read buffer sizes %v, want %v first", r.sizes, want)
	}
	for i, w := range want {
		if r.sizes[i] != w {
			t.Fatalf("read buffer sizes %v, want %v first", r.sizes, want)
		}
	}
}

// waitHeld waits until smallHeld is want.
func waitHeld(t *testing.T, want int64, what string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { return smallHeld.Load() == want },
		"%s: small buffers held never reached %d", what, want)
}

// TestQuietSocketHoldsNoBuffer: a direction that reads a socket holds no read buffer while it
// waits, and still relays what arrives; one that reads anything else keeps its small buffer.
func TestQuietSocketHoldsNoBuffer(t *testing.T) {
	app, backend, done := relayPair(t)
	for _, hop := range [][2]net.Conn{{app, backend}, {backend, app}} {
		hop[0].Write([]byte("hello"))
		hop[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, 5)
		if _, err := io.ReadFull(hop[1], got); err != nil || string(got) != "hello" {
			t.Fatalf("relayed %q, %v", got, err)
		}
	}
	waitHeld(t, 0, "two quiet directions reading sockets")
	app.Close()
	backend.Close()
	<-done

	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	pipes := make(chan struct{})
	go func() {
		Copy(a2, nil, b1)
		close(pipes)
	}()
	waitHeld(t, 2, "two quiet directions reading pipes")
	a1.Close()
	b2.Close()
	<-pipes
	waitHeld(t, 0, "after the pipes closed")
}

// pipePeeker is one end of a net.Pipe read through a bufio.Reader, whose Peek waits as a QUIC
// stream's does: a peeker source for Copy.
type pipePeeker struct {
	net.Conn
	r *bufio.Reader
}

func (p pipePeeker) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p pipePeeker) Peek(b []byte) (int, error) { bb, err := p.r.Peek(len(b)); return copy(b, bb), err }
func newPipePeeker(c net.Conn) pipePeeker       { return pipePeeker{c, bufio.NewReader(c)} }

// TestQuietPeekerHoldsNoBuffer: a direction that reads a peeker (a QUIC stream) holds no read
// buffer while it waits, relays what arrives, and ends at the peeker's EOF; the other direction,
// reading a plain pipe, keeps its small buffer.
func TestQuietPeekerHoldsNoBuffer(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		Copy(newPipePeeker(a2), nil, b1)
		close(done)
	}()
	waitHeld(t, 1, "one quiet peeker, one quiet pipe")
	data := make([]byte, 3*smallSize+5) // fills small buffers: copyBusy runs too
	rand.Read(data)
	go a1.Write(data)
	b2.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(b2, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("relayed %d bytes (equal: %v), %v", len(got), bytes.Equal(got, data), err)
	}
	waitHeld(t, 1, "the peeker quiet again")
	a1.Close() // the peeker's EOF: its direction ends, b1 is closed (a pipe has no CloseWrite)
	<-done
	b2.Close()
	waitHeld(t, 0, "after both ended")
}
