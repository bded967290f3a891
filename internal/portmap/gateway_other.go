//go:build !linux

package portmap

import (
	"fmt"
	"net/netip"
	"runtime"
)

// DefaultGateway finds no gateway off Linux: port mapping is disabled there (ErrNoGateway).
func DefaultGateway() (netip.Addr, error) {
	return netip.Addr{}, fmt.Errorf("%w: finding it is not implemented on %s, port mapping is off", ErrNoGateway, runtime.GOOS)
}
