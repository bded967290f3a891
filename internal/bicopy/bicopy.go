// Package bicopy copies bytes between two connections in both directions, as a proxy or a port
// forwarder does, with pooled buffers and correct half-close. It knows nothing about what the
// connections carry.
//
// Each direction reads into a small buffer while it is quiet, and switches to a large pooled buffer
// as soon as a read fills the small one, so bulk transfers move large chunks with few system calls
// and few handoffs to the connection's writer. It goes back to the small buffer when reads become
// short again. A quiet direction whose source is a socket (syscall.Conn) holds no buffer at all
// while it waits: it waits for the socket to become readable (a MSG_PEEK that takes nothing), and
// only then takes a small buffer from a pool for the read. Other sources (a QUIC stream, a netstack
// connection) offer no such wait and keep a small buffer of their own.
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
	err := copyAdaptive(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	dst.Close()
	srcConn.Close()
}

// copyAdaptive copies src to dst until EOF (nil) or an error. It never uses io.WriterTo or
// io.ReaderFrom: those would bring their own buffers (net.TCPConn's allocate 32 KiB per call) or
// splice, which holds a pipe (two descriptors) for as long as the connection lives.
func copyAdaptive(dst io.Writer, src io.Reader) error {
	wait := readableWaiter(src)
	var small *[smallSize]byte // held for good when src cannot be waited on
	if wait == nil {
		small = new([smallSize]byte)
		smallHeld.Add(1)
		defer smallHeld.Add(-1)
	}
	var big *[bigSize]byte
	defer func() {
		if big != nil {
			bigPool.Put(big)
		}
	}()
	for {
		var buf []byte
		var pooled *[smallSize]byte
		switch {
		case big != nil:
			buf = big[:]
		case small != nil:
			buf = small[:]
		default:
			wait() // errors and EOF are the Read's to report
			pooled = smallPool.Get().(*[smallSize]byte)
			smallHeld.Add(1)
			buf = pooled[:]
		}
		n, err := src.Read(buf)
		var werr error
		if n > 0 {
			var nw int
			nw, werr = dst.Write(buf[:n])
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
		}
		if pooled != nil {
			smallPool.Put(pooled)
			smallHeld.Add(-1)
		}
		if werr != nil {
			return werr
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case big == nil && n == smallSize: // busy: more is likely waiting
			big = bigPool.Get().(*[bigSize]byte)
		case big != nil && n <= smallSize: // quiet again: do not hold the large buffer while idle
			bigPool.Put(big)
			big = nil
		}
	}
}
