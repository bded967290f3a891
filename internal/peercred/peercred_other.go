//go:build !linux

package peercred

import (
	"net"
	"net/netip"
)

// ConnOwner reports ErrUnsupported: this system's socket owners are not looked up.
func ConnOwner(net.Conn) (uint32, error) { return 0, ErrUnsupported }

// TCPOwner reports ErrUnsupported.
func TCPOwner(_, _ netip.AddrPort) (uint32, error) { return 0, ErrUnsupported }

// UDPOwner reports ErrUnsupported.
func UDPOwner(netip.AddrPort) (uint32, error) { return 0, ErrUnsupported }
