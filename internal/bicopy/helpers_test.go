package bicopy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// Helpers the tests of every platform share.

// exchange writes msg on from and reads it on to.
func exchange(t *testing.T, from, to net.Conn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatal(err)
	}
	to.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("relayed %d bytes (equal: %v): %v", len(got), bytes.Equal(got, msg), err)
	}
}

// wait fails the test unless done closes within a generous safety net.
func wait(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the relay did not end", what)
	}
}
