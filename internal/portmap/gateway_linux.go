package portmap

import (
	"fmt"
	"net/netip"
	"os"
)

// DefaultGateway returns the gateway of the host's IPv4 default route (from /proc/net/route), the
// router port mapping asks.
func DefaultGateway() (netip.Addr, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: %w", err)
	}
	defer f.Close()
	return parseRoutes(f)
}
