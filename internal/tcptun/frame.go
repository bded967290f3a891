// Package tcptun carries QUIC packets over a TLS stream when UDP is blocked: a 2-byte big-endian
// length before each packet, at most MaxFrame bytes. Conn is the node's side (a net.PacketConn with
// one remote: the coord or a relay), Server the server's (a net.PacketConn over every accepted stream,
// each seen as a synthetic address in Prefix), and Dial reaches the server directly or through an
// HTTP CONNECT proxy. QUIC above it stays as it is: the same handshake, keys and pinning.
package tcptun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ALPN is the TLS protocol of the stream.
const ALPN = "warren-tcp/1"

// MaxFrame is the largest packet a frame carries: a QUIC packet (at most 1452 bytes on the wire)
// wrapped in a relay frame fits with room to spare.
const MaxFrame = 2048

// ErrFrameTooLarge is returned for a frame longer than MaxFrame (or empty): the stream is broken.
var ErrFrameTooLarge = errors.New("tcptun: frame length out of range")

// AppendFrame appends p as one frame to b. It fails if p is empty or longer than MaxFrame.
func AppendFrame(b, p []byte) ([]byte, error) {
	if len(p) == 0 || len(p) > MaxFrame {
		return b, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(p))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...), nil
}

// ReadFrame reads one frame from r into buf, which must hold MaxFrame bytes, and returns its length.
// A length over MaxFrame (or zero) is an error before anything is read beyond it: the peer's length
// never sizes an allocation.
func ReadFrame(r io.Reader, buf []byte) (int, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n == 0 || n > MaxFrame {
		return 0, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if len(buf) < n {
		return 0, fmt.Errorf("tcptun: buffer of %d bytes for a frame of %d", len(buf), n)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return n, nil
}
