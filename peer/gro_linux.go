package peer

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// enableGRO turns on UDP_GRO for c (Linux 5.0 and later), reporting whether it took.
func enableGRO(c *net.UDPConn) bool {
	return withFD(c, func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) }) == nil
}

// groSegmentSize returns the segment size of a coalesced read from its control messages, 0 if it
// holds a single datagram.
func groSegmentSize(oob []byte) int {
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(body) >= 4 {
			return int(binary.NativeEndian.Uint32(body))
		}
		oob = rest
	}
	return 0
}
