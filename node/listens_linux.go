package node

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/internal/packet"
)

// portInUse reports whether a socket holds proto (packet.ProtoTCP or ProtoUDP) port on addr: a
// bind() there fails with EADDRINUSE. A listener on a wildcard address holds the port on every
// address of its family (and an IPv6 one without IPV6_V6ONLY on IPv4 too); the probe itself binds
// IPv6 only. Nothing is listened on or sent.
func portInUse(proto uint8, addr netip.Addr, port uint16) (bool, error) {
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	if addr.Is6() {
		family = unix.AF_INET6
	}
	if proto == packet.ProtoUDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	if typ == unix.SOCK_STREAM {
		// Connections in TIME_WAIT do not count, only a listener (which conflicts regardless).
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	var sa unix.Sockaddr
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: int(port), Addr: addr.As4()}
	} else {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		sa = &unix.SockaddrInet6{Port: int(port), Addr: addr.As16()}
	}
	switch err := unix.Bind(fd, sa); {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EADDRINUSE):
		return true, nil
	default:
		return false, err
	}
}
