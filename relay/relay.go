// Package relay copies bytes between two connections in both directions, as a proxy or a port
// forwarder does, with pooled buffers and correct half-close. It knows nothing about what the
// connections carry.
package relay

import (
	"io"
	"net"
	"sync"
)

// bufSize is the copy buffer per direction.
const bufSize = 32 << 10

// bufPool holds copy buffers; a pointer to an array avoids an allocation per Get.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

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
	buf := bufPool.Get().(*[bufSize]byte)
	_, err := io.CopyBuffer(dst, src, buf[:])
	bufPool.Put(buf)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	dst.Close()
	srcConn.Close()
}
