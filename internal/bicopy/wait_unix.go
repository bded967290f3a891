//go:build unix

package bicopy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// socketSource reads a TCP or Unix socket itself, through syscall.RawConn, and holds no buffer
// while it waits: each attempt takes a small buffer from the pool and gives it back when the socket
// has nothing, before parking; so a quiet connection waits with no buffer, at no cost over
// net.Conn.Read (one read when data is waiting, a read, a park and a read when it is not). Where
// the package can park sockets (canPark), every wait is bounded by quietAfter, after which the
// direction parks the socket in the poller (park) and its goroutine ends.
type socketSource struct {
	conn net.Conn
	rc   syscall.RawConn
	try  func(fd uintptr) bool // attempt, bound once
	buf  *[smallSize]byte
	n    int
	rerr error

	d      *direction // what the poller restarts
	noPark bool       // the poller refused the socket: wait on the goroutine (its own field)
	// The poller's, guarded by its mutex: the socket's key in the epoll set, whether it is in the
	// set (parked or disarmed), and whether the direction is over or being closed (no more parking).
	key        uint64
	registered bool
	cancelled  bool
}

// newSocketSource returns a socketSource for src, or nil if src is not a plain TCP or Unix socket (a
// wrapper with its own Read must be read through it).
func newSocketSource(src io.Reader) *socketSource {
	var sc interface {
		net.Conn
		syscall.Conn
	}
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
	s := &socketSource{conn: sc, rc: rc}
	s.try = s.attempt
	return s
}

// attempt reads the socket once into a pooled buffer; it reports done unless the socket has nothing
// yet (then the buffer goes back to the pool first).
func (s *socketSource) attempt(fd uintptr) bool {
	if s.buf == nil {
		s.buf = smallPool.Get().(*[smallSize]byte)
		smallHeld.Add(1)
	}
	for {
		s.n, s.rerr = syscall.Read(int(fd), s.buf[:])
		if s.rerr != syscall.EINTR {
			break
		}
	}
	if s.rerr == syscall.EAGAIN {
		smallPool.Put(s.buf)
		smallHeld.Add(-1)
		s.buf = nil
		return false
	}
	return true
}

// armQuiet bounds the next wait by quietAfter where the socket can park afterwards.
func (s *socketSource) armQuiet() {
	if canPark() && !s.noPark {
		s.conn.SetReadDeadline(time.Now().Add(quietAfter))
	}
}

// isQuiet reports whether err is the end of a wait that armQuiet bounded (a read's deadline, not a
// write's: writeError).
func isQuiet(err error) bool {
	var we writeError
	return canPark() && errors.Is(err, os.ErrDeadlineExceeded) && !errors.As(err, &we)
}

// read waits for data and returns the pooled buffer holding its n bytes (the caller puts it back in
// smallPool), or nil with the error; io.EOF at the end, os.ErrDeadlineExceeded after quietAfter
// without data (isQuiet).
func (s *socketSource) read() (*[smallSize]byte, int, error) {
	s.buf, s.n, s.rerr = nil, 0, nil
	s.armQuiet()
	err := s.rc.Read(s.try) // closed, or past a deadline: no attempt succeeded
	if err == nil {
		err = s.rerr
	}
	n := s.n
	switch {
	case err != nil:
		n = 0
	case n == 0:
		err = io.EOF
	}
	buf := s.buf
	s.buf = nil
	if buf != nil && n == 0 {
		smallPool.Put(buf)
		smallHeld.Add(-1)
		buf = nil
	}
	return buf, n, err
}

// Read reads the socket into b (copyBusy's large buffer), its wait bounded as read's is.
func (s *socketSource) Read(b []byte) (int, error) {
	s.armQuiet()
	return s.conn.Read(b)
}
