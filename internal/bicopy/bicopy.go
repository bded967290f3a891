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
)

const (
	// smallSize is the read buffer of a quiet direction, held while its Read blocks: keystrokes,
	// request/response traffic and idle connections never need more.
	smallSize = 2 << 10
	// bigSize is the read buffer of a busy direction, taken from bigPool while reads keep coming
	// back larger than smallSize.
	bigSize = 128 << 10
)

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
// end: the caller does.
func Copy(a net.Conn, aR io.Reader, b net.Conn) {
	if aR == nil {
		aR = a
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, aR, a)
	}()
	pipe(a, b, b)
	<-done
}

// pipe copies src into dst; srcConn is the connection src reads from.
func pipe(dst net.Conn, src io.Reader, srcConn net.Conn) {
	// Which copy runs is decided here, not in a function of its own: every frame on the way to a
	// parked Read counts against the reader's stack (see copyPeeking).
	var err error
	if read := socketReader(src); read != nil {
		err = copyWaiting(dst, src, read)
	} else if p, ok := src.(peeker); ok {
		err = copyPeeking(dst, p)
	} else {
		err = copyBuffered(dst, src)
	}
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	dst.Close()
	srcConn.Close()
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

// copyWaiting is copyBuffered for a socket, read through socketReader: while quiet it holds no
// buffer.
func copyWaiting(dst io.Writer, src io.Reader, read func() (*[smallSize]byte, int, error)) error {
	for {
		small, n, err := read()
		if done, err := afterRead(dst, src, small, n, err); done {
			return err
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
// gives small back (copyWaiting, copyPeeking; nil: the caller wrote them, copyBuffered) and, if the
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

// writeAll writes b to dst, a short write being an error.
func writeAll(dst io.Writer, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := dst.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}
