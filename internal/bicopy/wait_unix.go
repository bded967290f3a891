//go:build unix

package bicopy

import (
	"io"
	"net"
	"syscall"
)

// socketReader returns a read for src that holds no buffer while it waits: it reads the socket
// itself, through syscall.RawConn, into a small buffer taken from the pool just for the attempt, and
// gives the buffer back when the socket has nothing, before parking; so a quiet connection parks
// with no buffer, at no cost over net.Conn.Read (one read when data is waiting, a read, a park and
// a read when it is not). The read returns the buffer holding its n bytes (the caller puts it back
// in smallPool), or nil with the error; io.EOF at the end. nil if src is not a plain TCP or Unix
// socket (a wrapper with its own Read must be read through it).
func socketReader(src io.Reader) func() (*[smallSize]byte, int, error) {
	var sc syscall.Conn
	switch c := src.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		buf  *[smallSize]byte
		n    int
		rerr error
	)
	attempt := func(fd uintptr) bool { // done unless the socket has nothing yet
		if buf == nil {
			buf = smallPool.Get().(*[smallSize]byte)
			smallHeld.Add(1)
		}
		for {
			n, rerr = syscall.Read(int(fd), buf[:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			smallPool.Put(buf)
			smallHeld.Add(-1)
			buf = nil
			return false
		}
		return true
	}
	return func() (*[smallSize]byte, int, error) {
		buf, n, rerr = nil, 0, nil
		err := rc.Read(attempt) // closed, or past a deadline: no attempt succeeded
		if err == nil {
			err = rerr
		}
		switch {
		case err != nil:
			n = 0
		case n == 0:
			err = io.EOF
		}
		if buf != nil && n == 0 {
			smallPool.Put(buf)
			smallHeld.Add(-1)
			buf = nil
		}
		return buf, n, err
	}
}
