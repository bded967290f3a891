package netstack

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestTCPConnPeek: Peek waits for the first byte, leaves it to Read, reports the peer's close as
// io.EOF once everything was read, and ends with an error when the connection is closed under it.
func TestTCPConnPeek(t *testing.T) {
	release := make(chan struct{})
	port := serve(t, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "go\n" {
			return
		}
		c.Write([]byte("hi"))
		<-release
	})
	a, _, _, _ := pair(t, port)

	peekOf := func(c net.Conn) <-chan error { // Peek's outcome: nil with 'h', or its error
		done := make(chan error, 1)
		go func() {
			b := make([]byte, 1)
			n, err := c.(*tcpConn).Peek(b)
			if err == nil && (n != 1 || b[0] != 'h') {
				err = errors.New("peeked " + string(b[:n]))
			}
			done <- err
		}()
		return done
	}

	c := dial(t, a, ipB4, port)
	defer c.Close()
	peeked := peekOf(c) // nothing has been sent yet: only "go" makes the service answer
	if _, err := c.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-peeked:
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Peek did not return after the service answered")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
		t.Fatalf("Read after Peek: %q, %v", got, err)
	}
	close(release) // the service returns and closes: EOF
	b := make([]byte, 1)
	if n, err := c.(*tcpConn).Peek(b); !errors.Is(err, io.EOF) {
		t.Fatalf("Peek after the service closed: %d, %v; want io.EOF", n, err)
	}

	c2 := dial(t, a, ipB4, port) // its service waits for "go", which never comes
	peeked = peekOf(c2)
	testkit.Eventually(t, 10*time.Second, func() bool { return c2.(*tcpConn).wq.Events() != 0 },
		"Peek never waited on the connection's queue")
	c2.Close()
	select {
	case err := <-peeked:
		if err == nil {
			t.Fatal("Peek on a closed connection succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Peek did not end when the connection was closed")
	}
}
