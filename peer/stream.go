package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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

// Errors DialStream returns. Each matches a syscall errno with errors.Is, so a proxy in front picks
// its reply code from the error's meaning (syscall.ECONNREFUSED, syscall.EHOSTUNREACH), never from
// its text.
var (
	// ErrStreamRefused is returned when the peer refuses the stream: the port is not exposed there,
	// its access rules deny it, or nothing listens on it (one answer for all three, as the packet
	// path answers with a RST). It matches syscall.ECONNREFUSED.
	ErrStreamRefused error = &dialError{"connection refused by peer (port not exposed or not listening)", syscall.ECONNREFUSED}
	// ErrPeerUnreachable is returned (wrapped) when the key is not a peer, or no link to it came up
	// before the context ended. It matches syscall.EHOSTUNREACH.
	ErrPeerUnreachable error = &dialError{"host unreachable", syscall.EHOSTUNREACH}
)

// dialError is an error with a fixed text that also matches a syscall errno.
type dialError struct {
	text  string
	errno syscall.Errno
}

func (e *dialError) Error() string { return e.text }

// Is makes errors.Is(err, syscall.ECONNREFUSED) and friends work.
func (e *dialError) Is(target error) bool {
	errno, ok := target.(syscall.Errno)
	return ok && errno == e.errno
}

// DialStream opens a stream to service h on peer k, waiting up to ctx's deadline for a link to come
// up, and returns it as a net.Conn once the peer has accepted. If the link is replaced while the peer
// has not answered yet (the path moved: relay to direct, a roaming peer), it tries the new link.
// A refusal is ErrStreamRefused; no such peer, or no link in time, wraps ErrPeerUnreachable.
func (e *Endpoint) DialStream(ctx context.Context, k Key, h StreamHeader) (net.Conn, error) {
	for tries := 0; ; tries++ {
		l, err := e.waitLink(ctx, k, true)
		if err != nil {
			return nil, err
		}
		c, err := e.dialStreamOn(ctx, k, l, h)
		if err != nil && l.retired.Load() && ctx.Err() == nil && tries < 3 {
			e.log.Debug("link replaced while opening a stream, retrying on the new one", "peer", e.Who(k))
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

// waitLink returns the live link to k. While none is up it waits, until ctx ends, for the peer's
// linkUp signal (installLink closes it when a link comes up, SetPeers when k leaves the peer set).
// It takes the write lock once per dial (the first waiter makes the channel), never per packet.
//
// For a stream it also waits out an interim link (link.interimUntil): a relay link that came up as
// the pair woke from an idle direct one. The direct link follows within a few round trips, and a
// stream opened on the relay would stay there for its whole life (links retire, streams do not
// move): an scp after an idle spell would run at the relay's rate. Packets take any link at once.
func (e *Endpoint) waitLink(ctx context.Context, k Key, stream bool) (*link, error) {
	var halfway time.Time // an interim link is taken by then at the latest: the dial keeps half its time
	if dl, ok := ctx.Deadline(); ok {
		halfway = time.Now().Add(time.Until(dl) / 2)
	}
	for {
		e.mu.Lock()
		ps := e.peers[k]
		if ps == nil {
			e.mu.Unlock()
			return nil, fmt.Errorf("%w: %s is not a peer", ErrPeerUnreachable, k)
		}
		var interim *time.Timer
		if l := ps.link; l != nil {
			until := l.interimUntil
			if !halfway.IsZero() && halfway.Before(until) {
				until = halfway
			}
			wait := time.Until(until)
			if !stream || wait <= 0 {
				e.mu.Unlock()
				return l, nil
			}
			interim = time.NewTimer(wait) // then the loop takes the interim link
		} else {
			ps.wakeIfDormant()
		}
		if ps.linkUp == nil {
			ps.linkUp = make(chan struct{})
		}
		up := ps.linkUp
		e.mu.Unlock()
		var interimUp <-chan time.Time
		if interim != nil {
			interimUp = interim.C
		}
		select {
		case <-up:
		case <-interimUp:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no link to peer %s: %w", ErrPeerUnreachable, k, ctx.Err())
		case <-e.ctx.Done():
			return nil, ErrClosed
		}
		if interim != nil {
			interim.Stop()
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
		if !refuse && e.inboundAll.Add(1) > e.maxInboundAll {
			e.inboundAll.Add(-1)
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
			c := &streamConn{s: s, link: l, local: l.conn.LocalAddr(), remote: l.conn.RemoteAddr(), inbound: &ps.inbound, inboundAll: &e.inboundAll}
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
			e.cfg.AcceptStream(&IncomingStream{From: k, Header: h, c: c})
		}()
	}
}

// IncomingStream is a stream a peer opened to us, its header read, waiting for our answer. The
// receiver answers it exactly once: Accept, then relay bytes over the connection it returns; or
// Refuse. The answer is one status byte on the wire, which only this package reads and writes.
type IncomingStream struct {
	From   Key          // the peer that opened it
	Header StreamHeader // the service it is for
	c      net.Conn
}

// NewIncomingStream wraps c, a connection whose other end speaks the stream protocol after the
// header (it reads the status byte, then the bytes): for answering streams that arrive another
// way, and for tests. If c has a CloseWrite method, Refuse uses it to end the answer cleanly.
func NewIncomingStream(from Key, h StreamHeader, c net.Conn) *IncomingStream {
	return &IncomingStream{From: from, Header: h, c: c}
}

// Accept answers the stream with StreamOK and returns it as a connection (a QUIC stream's has a
// CloseWrite that ends the send direction); the caller relays bytes and closes it. If the answer
// cannot be sent, the stream is closed and the error returned.
func (s *IncomingStream) Accept() (net.Conn, error) {
	if _, err := s.c.Write([]byte{StreamOK}); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("accept stream from %s: %w", s.From, err)
	}
	return s.c, nil
}

// Refuse answers the stream with StreamRefused and closes it; the dialer's DialStream returns
// ErrStreamRefused. The answer carries no reason: a peer does not learn whether the port is not
// exposed, denied by the access rules or not listening, as over the packet path.
func (s *IncomingStream) Refuse() {
	s.c.Write([]byte{StreamRefused})
	if cw, ok := s.c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	s.c.Close()
}

// streamConn is a QUIC stream as a net.Conn: CloseWrite ends the send direction (FIN), Close ends both.
// It counts on its link until closed, which keeps a retired link open for it.
type streamConn struct {
	s             *quic.Stream
	link          *link
	local, remote net.Addr
	inbound       *atomic.Int32 // the peer's count of streams it opened to us; nil for ours
	inboundAll    *atomic.Int32 // the count over all peers; nil for ours
	closeOnce     sync.Once
}

func (c *streamConn) Read(b []byte) (int, error)  { return c.s.Read(b) }
func (c *streamConn) Write(b []byte) (int, error) { return c.s.Write(b) }

// Peek waits until len(b) bytes are there and copies them without consuming them (quic-go's
// Stream.Peek): bicopy waits on a one-byte Peek, so a quiet relay parks without a read buffer.
func (c *streamConn) Peek(b []byte) (int, error) { return c.s.Peek(b) }

func (c *streamConn) CloseWrite() error { return c.s.Close() }
func (c *streamConn) Close() error {
	c.s.CancelRead(0)
	err := c.s.Close()
	c.closeOnce.Do(func() {
		c.link.doneStream()
		if c.inbound != nil {
			c.inbound.Add(-1)
			c.inboundAll.Add(-1)
		}
	})
	return err
}
func (c *streamConn) LocalAddr() net.Addr                { return c.local }
func (c *streamConn) RemoteAddr() net.Addr               { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }
