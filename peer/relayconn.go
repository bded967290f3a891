package peer

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/deadline"
)

// relayAddr is a peer as seen through the relay: QUIC connections over the relay are addressed to the
// peer's key, and relayConn turns that into the relay's address plus a relay header.
type relayAddr struct{ key Key }

func (a relayAddr) Network() string { return "warren-relay" }
func (a relayAddr) String() string  { return "relay/" + a.key.String() }

// relayPacket is one QUIC packet received through the relay, in a pooled buffer.
type relayPacket struct {
	from Key
	buf  *[]byte
	n    int
}

// relayQueue bounds the packets waiting for the relay transport; more are dropped and counted, the
// way a full socket buffer drops.
const relayQueue = 512

var relayBufs = sync.Pool{New: func() any { b := make([]byte, control.RelayHeaderSize+control.MaxRelayPayload); return &b }}

// relayConn is the net.PacketConn under the relay's quic.Transport. It sends by wrapping each QUIC
// packet in a relay frame to a relay over the node's one UDP socket — which relay, per peer, is
// relayPaths' choice (relaypath.go) — and reads what the side-channel reader delivers. QUIC's own
// encryption stays end to end: the relays forward ciphertext.
type relayConn struct {
	write func(b []byte, to netip.AddrPort) error // sends on the node's socket
	local net.Addr
	paths relayPaths
	in    chan relayPacket
	drops atomic.Uint64

	closeOnce sync.Once
	closed    chan struct{}

	deadline deadline.Deadline // the read deadline
}

func newRelayConn(write func([]byte, netip.AddrPort) error, local net.Addr) *relayConn {
	return &relayConn{write: write, local: local, in: make(chan relayPacket, relayQueue),
		closed: make(chan struct{})}
}

// deliver hands a payload that came from peer from through the relay at via to the transport; it
// copies p. It never blocks.
func (c *relayConn) deliver(from Key, via netip.AddrPort, p []byte) {
	if len(p) > control.MaxRelayPayload {
		c.drops.Add(1)
		return
	}
	c.paths.heard(from, via, time.Now())
	buf := relayBufs.Get().(*[]byte)
	n := copy(*buf, p)
	select {
	case c.in <- relayPacket{from: from, buf: buf, n: n}:
	default:
		relayBufs.Put(buf)
		c.drops.Add(1)
	}
}

var errDeadline = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "relay conn: i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }
func (*timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }

func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	dl := c.deadline.Done()
	select {
	case p := <-c.in:
		n := copy(b, (*p.buf)[:p.n])
		relayBufs.Put(p.buf)
		return n, relayAddr{p.from}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-dl:
		return 0, nil, errDeadline
	}
}

func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ra, ok := addr.(relayAddr)
	if !ok {
		return 0, errors.New("relay conn: not a relay address")
	}
	var to [maxRelays]netip.AddrPort
	n := c.paths.route(ra.key, time.Now(), &to)
	if n == 0 || len(b) > control.MaxRelayPayload {
		c.drops.Add(1)
		return len(b), nil // like a lost packet: QUIC recovers or times out
	}
	buf := relayBufs.Get().(*[]byte)
	frame := control.AppendRelay((*buf)[:0], control.KindRelayTo, ra.key[:], b)
	var err error
	sent := 0
	for _, r := range to[:n] {
		if werr := c.write(frame, r); werr != nil {
			err = werr
		} else {
			sent++
		}
	}
	relayBufs.Put(buf)
	if sent == 0 {
		return 0, err // a failure through one relay of several is a lost copy, not an error
	}
	return len(b), nil
}

func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.deadline.Stop()
	})
	return nil
}

func (c *relayConn) LocalAddr() net.Addr { return c.local }

func (c *relayConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *relayConn) SetReadDeadline(t time.Time) error {
	c.deadline.Set(t)
	return nil
}

func (c *relayConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer are no-ops: the node's UDP socket under the relay has its buffers
// sized by the main transport already. (Having them keeps quic-go from warning about a non-UDP conn.)
func (c *relayConn) SetReadBuffer(int) error  { return nil }
func (c *relayConn) SetWriteBuffer(int) error { return nil }
