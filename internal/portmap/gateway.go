package portmap

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrNoGateway: the host has no IPv4 default route through a gateway (or, off Linux, port mapping
// cannot find one: it is disabled there).
var ErrNoGateway = errors.New("portmap: no IPv4 default gateway")

// maxRouteLines bounds how much of the routing table parseRoutes reads.
const maxRouteLines = 4096

// parseRoutes returns the gateway of the IPv4 default route with the lowest metric from a
// /proc/net/route table.
func parseRoutes(r io.Reader) (netip.Addr, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	var best netip.Addr
	bestMetric := uint64(1 << 63)
	for line := 0; sc.Scan() && line < maxRouteLines; line++ {
		f := strings.Fields(sc.Text())
		if line == 0 || len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue // the header, or not a default route
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 16)
		metric, err2 := strconv.ParseUint(f[6], 10, 32)
		gw, err3 := hex.DecodeString(f[2])
		const rtfUp, rtfGateway = 0x1, 0x2
		if err1 != nil || err2 != nil || err3 != nil || len(gw) != 4 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		// The kernel prints the network-order address as a host-order word.
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], binary.BigEndian.Uint32(gw))
		if ip := netip.AddrFrom4(a); !ip.IsUnspecified() && metric < bestMetric {
			best, bestMetric = ip, metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: read routes: %w", err)
	}
	if !best.IsValid() {
		return netip.Addr{}, ErrNoGateway
	}
	return best, nil
}
