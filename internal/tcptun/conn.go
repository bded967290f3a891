package tcptun

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Conn is a net.PacketConn over one framed stream to one remote: every packet read comes from
// remote, every packet written goes to it (whatever address it is written to). Close closes the
// stream. Safe for concurrent use.
type Conn struct {
	c      net.Conn
	r      *bufio.Reader
	remote net.Addr

	rmu  sync.Mutex // one reader at a time: rbuf
	rbuf [MaxFrame]byte

	wmu  sync.Mutex
	wbuf []byte
}

// NewConn wraps a stream (usually a *tls.Conn from Dial) whose packets are to and from remote.
func NewConn(c net.Conn, remote net.Addr) *Conn {
	return &Conn{c: c, r: bufio.NewReaderSize(c, 16<<10), remote: remote}
}

// ReadFrom reads the next packet into p. A packet longer than p is truncated, as on a UDP socket.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := ReadFrame(c.r, c.rbuf[:])
	if err != nil {
		return 0, nil, err
	}
	return copy(p, c.rbuf[:n]), c.remote, nil
}

// WriteTo writes p as one frame. A packet larger than MaxFrame is an error and nothing is written.
func (c *Conn) WriteTo(p []byte, _ net.Addr) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := AppendFrame(c.wbuf[:0], p)
	if err != nil {
		return 0, err
	}
	c.wbuf = b
	if _, err := c.c.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the stream.
func (c *Conn) Close() error { return c.c.Close() }

// LocalAddr returns the stream's local address.
func (c *Conn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// RemoteAddr returns the stream's remote address (the server, or the proxy).
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// SetDeadline sets the stream's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline sets the stream's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline sets the stream's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// IsTimeout reports whether err is a deadline expiring.
func IsTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// SetReadBuffer does nothing: the stream's TCP buffers hold the packets (quic-go asks, to size a UDP
// socket's).
func (c *Conn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing (see SetReadBuffer).
func (c *Conn) SetWriteBuffer(int) error { return nil }
