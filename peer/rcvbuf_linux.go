package peer

import (
	"net"

	"golang.org/x/sys/unix"
)

// capReceiveBuffer lowers c's receive buffer to receiveBufferCap where it is larger (Linux reports
// and accounts twice the size asked for). It never raises it.
func capReceiveBuffer(c *net.UDPConn) error {
	return withFD(c, func(fd int) error {
		have, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil || have <= 2*receiveBufferCap {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBufferCap)
	})
}

// withFD runs f on c's file descriptor.
func withFD(c *net.UDPConn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
