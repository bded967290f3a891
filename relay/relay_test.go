package relay

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
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

// TestHalfClose: a client that sends, then shuts down its write side, still receives the full answer
// that the far side writes after seeing EOF.
func TestHalfClose(t *testing.T) {
	app, proxyIn := tcpPair(t)
	proxyOut, backend := tcpPair(t)
	done := make(chan struct{})
	go func() {
		Copy(proxyIn, nil, proxyOut)
		proxyIn.Close()
		proxyOut.Close()
		close(done)
	}()
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
