package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Streams: the fast path for proxied TCP. A node that wants a peer's exposed port opens a QUIC stream
// on the link and writes a 4-byte header:
//
//	byte 0   version (1)
//	byte 1   protocol (6 = TCP)
//	byte 2-3 port, big endian
//
// The receiver answers one status byte (StreamOK, StreamRefused) and then both directions carry the
// connection's bytes. The link already authenticates the peer, so the header needs no identity.

// StreamHeaderSize is the size of a stream header.
const StreamHeaderSize = 4

const streamVersion = 1

// ProtoTCP is the protocol number of a TCP stream.
const ProtoTCP = 6

// Stream status codes sent by the receiver.
const (
	StreamOK      byte = 0
	StreamRefused byte = 1 // not exposed, or nothing listens on the port
)

// StreamHeader names the service a stream is for.
type StreamHeader struct {
	Proto byte
	Port  uint16
}

// ErrBadStreamHeader is returned for a header with an unknown version or protocol or port 0.
var ErrBadStreamHeader = errors.New("bad stream header")

// AppendStreamHeader appends h's wire form to b.
func AppendStreamHeader(b []byte, h StreamHeader) []byte {
	return append(b, streamVersion, h.Proto, byte(h.Port>>8), byte(h.Port))
}

// ParseStreamHeader parses a header; b must be exactly StreamHeaderSize bytes.
func ParseStreamHeader(b []byte) (StreamHeader, error) {
	if len(b) != StreamHeaderSize || b[0] != streamVersion || b[1] != ProtoTCP {
		return StreamHeader{}, ErrBadStreamHeader
	}
	h := StreamHeader{Proto: b[1], Port: uint16(b[2])<<8 | uint16(b[3])}
	if h.Port == 0 {
		return StreamHeader{}, ErrBadStreamHeader
	}
	return h, nil
}

// ErrStreamRefused is returned by DialStream when the peer refuses the port. Its text contains
// "connection refused" so proxies map it to the right reply.
var ErrStreamRefused = errors.New("connection refused by peer (port not exposed or not listening)")

// DialStream opens a stream to service h on peer k, waiting up to ctx's deadline for a link to come
// up, and returns it as a net.Conn once the peer has accepted. If the link is replaced while the peer
// has not answered yet (the path moved: relay to direct, a roaming peer), it tries the new link.
func (e *Endpoint) DialStream(ctx context.Context, k Key, h StreamHeader) (net.Conn, error) {
	for tries := 0; ; tries++ {
		l, err := e.waitLink(ctx, k)
		if err != nil {
			return nil, err
		}
		c, err := e.dialStreamOn(ctx, k, l, h)
		if err != nil && l.retired.Load() && ctx.Err() == nil && tries < 3 {
			e.log.Debug("link replaced while opening a stream, retrying on the new one", "peer", k)
			continue
		}
		return c, err
	}
}

func (e *Endpoint) dialStreamOn(ctx context.Context, k Key, l *link, h StreamHeader) (net.Conn, error) {
	l.addStream()
	s, err := l.conn.OpenStreamSync(ctx)
	if err != nil {
		l.doneStream()
		return nil, fmt.Errorf("open stream to %s: %w", k, err)
	}
	c := &streamConn{s: s, link: l, local: l.conn.LocalAddr(), remote: l.conn.RemoteAddr()}
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	var hdr [StreamHeaderSize]byte
	if _, err := s.Write(AppendStreamHeader(hdr[:0], h)); err != nil {
		c.Close()
		return nil, fmt.Errorf("stream header: %w", err)
	}
	var status [1]byte
	fired := make(chan struct{})
	stop := context.AfterFunc(l.ctx, func() { // retired or closed: stop waiting
		s.SetDeadline(time.Now())
		close(fired)
	})
	_, err = io.ReadFull(s, status[:])
	if !stop() {
		<-fired // its deadline is set before the one below clears it
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("stream to %s: %w", k, err)
	}
	s.SetDeadline(time.Time{})
	if status[0] != StreamOK {
		c.Close()
		return nil, ErrStreamRefused
	}
	return c, nil
}

// waitLink returns the live link to k, polling until ctx is done if it is still being set up.
func (e *Endpoint) waitLink(ctx context.Context, k Key) (*link, error) {
	for {
		e.mu.RLock()
		ps := e.peers[k]
		var link *link
		if ps != nil {
			link = ps.link
		}
		e.mu.RUnlock()
		if ps == nil {
			return nil, fmt.Errorf("host unreachable: %s is not a peer", k)
		}
		if link != nil {
			return link, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("host unreachable: no link to peer %s: %w", k, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// acceptStreams hands every stream a peer opens on conn to cfg.AcceptStream, after reading its header.
func (e *Endpoint) acceptStreams(k Key, l *link) {
	defer e.wg.Done()
	for {
		s, err := l.conn.AcceptStream(e.ctx)
		if err != nil {
			return
		}
		e.mu.RLock()
		ps := e.peers[k]
		e.mu.RUnlock()
		refuse := e.cfg.AcceptStream == nil || l.removed.Load() || ps == nil
		if !refuse && ps.inbound.Add(1) > e.maxInbound {
			ps.inbound.Add(-1)
			refuse = true
		}
		if refuse {
			s.CancelRead(0)
			s.CancelWrite(0)
			continue
		}
		l.addStream()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			c := &streamConn{s: s, link: l, local: l.conn.LocalAddr(), remote: l.conn.RemoteAddr(), inbound: &ps.inbound}
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			var hdr [StreamHeaderSize]byte
			if _, err := io.ReadFull(s, hdr[:]); err != nil {
				c.Close()
				return
			}
			h, err := ParseStreamHeader(hdr[:])
			if err != nil {
				c.Close()
				return
			}
			s.SetReadDeadline(time.Time{})
			if l.removed.Load() { // the peer was removed while its header was on the way
				c.Close()
				return
			}
			e.cfg.AcceptStream(k, h, c)
		}()
	}
}

// streamConn is a QUIC stream as a net.Conn: CloseWrite ends the send direction (FIN), Close ends both.
// It counts on its link until closed, which keeps a retired link open for it.
type streamConn struct {
	s             *quic.Stream
	link          *link
	local, remote net.Addr
	inbound       *atomic.Int32 // the peer's count of streams it opened to us; nil for ours
	closeOnce     sync.Once
}

// Accept answers a received stream with StreamOK; the caller then relays bytes.
func Accept(c net.Conn) error {
	_, err := c.Write([]byte{StreamOK})
	return err
}

// Refuse answers a received stream with StreamRefused and closes it.
func Refuse(c net.Conn) {
	c.Write([]byte{StreamRefused})
	c.(interface{ CloseWrite() error }).CloseWrite()
	c.Close()
}

func (c *streamConn) Read(b []byte) (int, error)  { return c.s.Read(b) }
func (c *streamConn) Write(b []byte) (int, error) { return c.s.Write(b) }
func (c *streamConn) CloseWrite() error           { return c.s.Close() }
func (c *streamConn) Close() error {
	c.s.CancelRead(0)
	err := c.s.Close()
	c.closeOnce.Do(func() {
		c.link.doneStream()
		if c.inbound != nil {
			c.inbound.Add(-1)
		}
	})
	return err
}
func (c *streamConn) LocalAddr() net.Addr                { return c.local }
func (c *streamConn) RemoteAddr() net.Addr               { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }
