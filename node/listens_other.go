//go:build !linux

package node

import (
	"errors"
	"net/netip"
)

// portInUse is not probed on this system (TUN mode is Linux only); the start-up warning is skipped.
func portInUse(proto uint8, addr netip.Addr, port uint16) (bool, error) {
	return false, errors.New("port probe: Linux only")
}
