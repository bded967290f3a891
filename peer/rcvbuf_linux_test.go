package peer

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func receiveBuffer(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) { size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return size
}

// TestReceiveBufferCapped: quic-go sizes the node's socket for 7 MiB (as root it forces that past
// rmem_max); the endpoint bounds it to receiveBufferCap, which Linux reports doubled. Without root
// quic-go's request may stay below the cap anyway; the bound holds either way.
func TestReceiveBufferCapped(t *testing.T) {
	n := newUDPTestNode(t)
	uc := n.ep.cfg.Conn.(*net.UDPConn)
	if got := receiveBuffer(t, uc); got > 2*receiveBufferCap {
		t.Fatalf("receive buffer %d bytes, want at most %d", got, 2*receiveBufferCap)
	}
	if os.Geteuid() == 0 {
		if err := capReceiveBuffer(uc); err != nil { // a second call leaves the buffer alone
			t.Fatal(err)
		}
		if got := receiveBuffer(t, uc); got != 2*receiveBufferCap {
			t.Fatalf("as root the buffer is %d bytes, want the cap's %d", got, 2*receiveBufferCap)
		}
	}
}

// TestCapReceiveBufferNeverRaises: a buffer below the cap stays as it is.
func TestCapReceiveBufferNeverRaises(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if err := uc.SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	before := receiveBuffer(t, uc)
	if err := capReceiveBuffer(uc); err != nil {
		t.Fatal(err)
	}
	if got := receiveBuffer(t, uc); got != before {
		t.Fatalf("buffer %d bytes after the cap, %d before", got, before)
	}
}
