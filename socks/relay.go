package socks

import (
	"io"
	"net"
	"sync"
)

// bufPool holds relay buffers; a pointer to an array avoids an allocation per Get.
var bufPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

type closeWriter interface{ CloseWrite() error }

// relay copies client→target (reading from clientR, which may hold buffered bytes of client) and
// target→client until both directions end. When one direction ends, the write side of its destination
// is shut down so the other end sees EOF but can still answer; when both have ended, the caller closes.
func relay(client net.Conn, clientR io.Reader, target net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(target, clientR)
	}()
	pipe(client, target)
	<-done
}

func pipe(dst net.Conn, src io.Reader) {
	buf := bufPool.Get().(*[32 << 10]byte)
	_, err := io.CopyBuffer(dst, src, buf[:])
	bufPool.Put(buf)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	// An error on one direction (or no half-close support): close both ends so the other copy stops.
	dst.Close()
	if c, ok := src.(io.Closer); ok {
		c.Close()
	}
}
