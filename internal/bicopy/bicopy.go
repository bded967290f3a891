// Package bicopy copies bytes between two connections in both directions, as a proxy or a port
// forwarder does, with pooled buffers and correct half-close. It knows nothing about what the
// connections carry.
//
// Each direction reads into a small buffer while it is quiet, and switches to a large pooled buffer
// as soon as a read fills the small one, so bulk transfers move large chunks with few system calls
// and few handoffs to the connection's writer. It goes back to the small buffer when reads become
// short again. A quiet direction whose source is a TCP or Unix socket holds no buffer at all while
// it waits: it reads the socket itself (syscall.RawConn) into a pooled small buffer that it gives
// back before parking. So does a source that can wait without consuming (Peek: a QUIC stream, a
// netstack connection): it takes the buffer only once a byte is there. Other sources (a pipe, a
// wrapper with its own Read) keep a small buffer of their own.
package bicopy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// smallSize is the read buffer of a quiet direction, held while its Read blocks: keystrokes,
	// request/response traffic and idle connections never need more.
	smallSize = 2 << 10
	// bigSize is the read buffer of a busy direction, taken from bigPool while reads keep coming
	// back larger than smallSize.
	bigSize = 128 << 10
)

// quietAfter is how long a socket direction waits for data on its goroutine before it parks the
// socket in the poller and lets the goroutine go, where it can (Linux; tests shorten it). Parking
// and waking cost a few microseconds (two epoll calls and a goroutine); a goroutine costs a 2 KiB
// stack for as long as it waits.
var quietAfter = time.Second

// bigPool holds large buffers and smallPool small ones; a pointer to an array avoids an allocation
// per Get.
var (
	bigPool   = sync.Pool{New: func() any { return new([bigSize]byte) }}
	smallPool = sync.Pool{New: func() any { return new([smallSize]byte) }}
)

// smallHeld counts the small buffers held by directions, pooled or their own (for tests).
var smallHeld atomic.Int64

type closeWriter interface{ CloseWrite() error }

// Copy relays a→b and b→a until both directions end; aR, if not nil, is read instead of a (for a
// reader that holds bytes already buffered from a). When one direction reaches EOF, the write side of
// its destination is shut down, so the far end sees EOF and can still answer. On an error both
// connections are closed, which ends the other direction too. Copy does not close a or b on a clean
// end: the caller does. It is Start, waited for.
func Copy(a net.Conn, aR io.Reader, b net.Conn) {
	done := make(chan struct{})
	Start(a, aR, b, func() { close(done) })
	<-done
}

// Relay is a relay that Start began.
type Relay struct {
	a, b net.Conn
	dirs [2]direction
	left atomic.Int32 // directions still running
	done func()
}

// direction copies one way: from src (read from srcConn) to dst.
type direction struct {
	r       *Relay
	dst     net.Conn
	src     io.Reader
	srcConn net.Conn
	// sock is src when it is a socket read directly (socketSource): such a direction holds no buffer
	// while it waits and, where the package can park (Linux), no goroutine either once it has been
	// quiet for quietAfter. nil for other sources.
	sock *socketSource
}

// Start relays between a and b as Copy does, on goroutines of its own, and returns at once; done
// (if not nil) runs once both directions have ended, on the goroutine of the last. A direction
// that reads a socket and has been quiet for quietAfter gives up its goroutine on Linux: the
// socket waits in the package's epoll set, and a new goroutine takes over when it is readable. So
// an idle relay between a socket and a QUIC stream holds one goroutine (the stream's reader) and
// no buffer. Whoever closes a or b while the relay runs must do it through Relay.Close: a parked
// direction notices nothing else. An owner that closes all its relays at once starts them in a Group.
func Start(a net.Conn, aR io.Reader, b net.Conn, done func()) *Relay {
	if aR == nil {
		aR = a
	}
	r := &Relay{a: a, b: b, done: done}
	r.dirs[0] = direction{r: r, dst: b, src: aR, srcConn: a, sock: newSocketSource(aR)}
	r.dirs[1] = direction{r: r, dst: a, src: b, srcConn: b, sock: newSocketSource(b)}
	r.left.Store(2)
	for i := range r.dirs {
		if s := r.dirs[i].sock; s != nil {
			s.d = &r.dirs[i]
			r.dirs[i].src = s
		}
		go r.dirs[i].run()
	}
	return r
}

// Close closes both connections, which ends both directions (done still runs, once they have).
func (r *Relay) Close() error {
	r.unpark()
	return errors.Join(r.a.Close(), r.b.Close())
}

// unpark takes the relay's parked directions out of the poller and restarts them, so that they see
// the close that follows.
func (r *Relay) unpark() {
	for i := range r.dirs {
		if s := r.dirs[i].sock; s != nil && s.cancel() {
			go r.dirs[i].run()
		}
	}
}

// run copies until the direction ends or parks.
func (d *direction) run() {
	// Which copy runs is decided here, not in a function of its own: every frame on the way to a
	// parked Read counts against the reader's stack (see copyPeeking).
	var err error
	if d.sock != nil {
		var parked bool
		if parked, err = copySocket(d.dst, d.sock); parked {
			return
		}
		d.sock.cancel() // ending on its own goroutine: not parked, out of the set for good
	} else if p, ok := d.src.(peeker); ok {
		err = copyPeeking(d.dst, p)
	} else {
		err = copyBuffered(d.dst, d.src)
	}
	if cw, ok := d.dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
	} else {
		d.r.unpark()
		d.dst.Close()
		d.srcConn.Close()
	}
	if d.r.left.Add(-1) == 0 && d.r.done != nil {
		d.r.done()
	}
}

// peeker is a source that can wait for data without consuming it: a QUIC stream (quic-go's
// Stream.Peek blocks until len(b) bytes are there) or a netstack connection (netstack.tcpConn);
// copyPeeking asks for one byte.
type peeker interface {
	io.Reader
	Peek(b []byte) (int, error)
}

// copyBuffered copies src to dst until EOF (nil) or an error, with a small buffer of its own for the
// quiet stretches (a source that is neither a socket nor a peeker: a pipe, a wrapper with its own
// Read); a read that fills it hands over to copyBusy until reads are short again (afterRead). It
// never uses io.WriterTo or io.ReaderFrom: those would bring their own buffers (net.TCPConn's
// allocate 32 KiB per call) or splice, which holds a pipe (two descriptors) for as long as the
// connection lives.
func copyBuffered(dst io.Writer, src io.Reader) error {
	small := make([]byte, smallSize)
	smallHeld.Add(1)
	defer smallHeld.Add(-1)
	for {
		n, err := src.Read(small)
		if werr := writeAll(dst, small[:n]); werr != nil {
			return werr
		}
		if done, err := afterRead(dst, src, nil, n, err); done {
			return err
		}
	}
}

// copySocket is copyBuffered for a socket, read through s: while quiet it holds no buffer, and
// once it has been quiet for quietAfter it parks s in the poller and reports parked (the caller's
// goroutine then ends; the poller starts a new one when the socket is readable). Where parking is
// not possible it keeps waiting.
func copySocket(dst io.Writer, s *socketSource) (parked bool, _ error) {
	for {
		small, n, err := s.read()
		done, err := afterRead(dst, s, small, n, err)
		if !done {
			continue
		}
		if !isQuiet(err) {
			return false, err
		}
		if s.park() {
			return true, nil
		}
	}
}

// copyPeeking is copyBuffered for a peeker: it waits for the first byte with a one-byte Peek and
// only then takes a small buffer from the pool for the Read, which returns what is there without
// blocking; so while quiet it holds no buffer. It calls Peek itself, not through a read function
// as copyWaiting does: one frame fewer keeps node B's parked stream readers (quic-go's Peek is
// deeper than its Read) within Go's 2 KiB starting stack. Its frame counts likewise: a few words
// more made half of node B's readers outgrow that stack (BENCHMARKS.md, stop 26).
func copyPeeking(dst io.Writer, src peeker) error {
	one := new([1]byte)
	for {
		var small *[smallSize]byte
		n := 0
		_, err := src.Peek(one[:]) // no byte came: the end, or an error
		if err == nil {
			small = smallPool.Get().(*[smallSize]byte)
			smallHeld.Add(1)
			n, err = src.Read(small[:])
		}
		if done, err := afterRead(dst, src, small, n, err); done {
			return err
		}
	}
}

// afterRead finishes a read of n bytes: it writes the bytes in small, a pooled buffer, to dst and
// gives small back (copySocket, copyPeeking; nil: the caller wrote them, copyBuffered) and, if the
// read filled a small buffer, hands over to copyBusy until reads are short again. done reports
// that the copy is over (err is nil at src's EOF).
func afterRead(dst io.Writer, src io.Reader, small *[smallSize]byte, n int, err error) (done bool, _ error) {
	if small != nil {
		werr := writeAll(dst, small[:n])
		smallPool.Put(small)
		smallHeld.Add(-1)
		if werr != nil {
			return true, werr
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		return true, nil
	case err != nil:
		return true, err
	case n == smallSize: // busy: more is likely waiting
		return copyBusy(dst, src)
	}
	return false, nil
}

// copyBusy copies through a large pooled buffer while reads keep coming back larger than smallSize.
// done reports that the copy is over (src ended: err is nil at EOF; or an error), rather than src
// having gone quiet again.
func copyBusy(dst io.Writer, src io.Reader) (done bool, err error) {
	big := bigPool.Get().(*[bigSize]byte)
	defer bigPool.Put(big)
	for {
		n, err := src.Read(big[:])
		if werr := writeAll(dst, big[:n]); werr != nil {
			return true, werr
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		if n <= smallSize {
			return false, nil
		}
	}
}

// writeAll writes b to dst, a short write being an error. A failed write's error is a writeError,
// so that a deadline on dst is never taken for the source's quiet deadline (isQuiet).
func writeAll(dst io.Writer, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := dst.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return writeError{err}
	}
	return nil
}

// writeError is an error of the destination's Write.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }
