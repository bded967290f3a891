//go:build !linux

package loadtest

import "net/netip"

// processStats reads a local coord's resource use where /proc exists (Linux); elsewhere none.
func processStats(netip.AddrPort) (ServerStats, bool) { return ServerStats{}, false }
