//go:build !linux

package peer

import "net"

// enableGRO reports false: UDP_GRO is Linux's.
func enableGRO(*net.UDPConn) bool { return false }

// groSegmentSize returns 0: without UDP_GRO every read holds one datagram.
func groSegmentSize([]byte) int { return 0 }
