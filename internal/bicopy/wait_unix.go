//go:build unix

package bicopy

import (
	"io"
	"syscall"
)

// readableWaiter returns a func that blocks until the socket src reads from has bytes, EOF or an
// error for it, taking nothing from it; nil if src is not a socket.
func readableWaiter(src io.Reader) func() {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	peek := func(fd uintptr) bool { // done unless the socket has nothing yet
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	}
	return func() { rc.Read(peek) }
}
