package socks

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first n Accepts with EMFILE, as a process out of file descriptors does,
// then hands out the connections sent on conns.
type flakyListener struct {
	n     int
	conns chan net.Conn
	done  chan struct{}
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *flakyListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1080} }

// Running out of file descriptors (which a network member can cause by opening streams to an
// exposed port) must not stop the proxy for good: it backs off and accepts again.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	s, err := New(Config{Dial: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF }})
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{n: 5, conns: make(chan net.Conn), done: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	client, server := net.Pipe()
	defer client.Close()
	select {
	case ln.conns <- server:
	case err := <-served:
		t.Fatalf("Serve returned after accept errors: %v", err)
	}
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var reply [2]byte
	if _, err := io.ReadFull(client, reply[:]); err != nil || reply != [2]byte{5, 0} {
		t.Fatalf("greeting after the errors: %v %v", reply, err)
	}
	if got := s.acceptErrors.Load(); got != 5 {
		t.Errorf("accept errors counted: %d, want 5", got)
	}
	s.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}
