package node

// Localhost-bound services in TUN mode. The kernel serves exposed ports on the device's address, so
// a service listening only on 127.0.0.1 would refuse peers (TCP) or never see them (UDP). Instead,
// before the filter hands a new inbound flow to an exposed port to the kernel, it asks whether
// anything holds that port on the overlay address (a bind() probe: a service on the overlay
// address or on a wildcard address holds it). If nothing does, the netstack takes the flow and
// forwards it to 127.0.0.1:PORT exactly as proxy mode does (with whois and PROXY headers); the
// flow table then keeps the flow there. Answers are cached for a second per port and address.

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/warren-net/warren/internal/packet"
)

// Probe cache bounds.
const (
	probeTTL       = time.Second
	maxProbeCached = 1024 // exposed ports × 2 addresses in practice; cleared if ever exceeded
)

// probeKey is one port on one address.
type probeKey struct {
	proto uint8
	addr  netip.Addr
	port  uint16
}

type probeResult struct {
	inUse bool
	err   error
	at    time.Time
}

// listenProbe caches portInUse answers.
type listenProbe struct {
	inUse func(proto uint8, addr netip.Addr, port uint16) (bool, error) // portInUse; tests swap it
	now   func() time.Time

	mu    sync.Mutex
	cache map[probeKey]probeResult
}

func newListenProbe() *listenProbe {
	return &listenProbe{inUse: portInUse, now: time.Now, cache: make(map[probeKey]probeResult)}
}

// check reports whether something holds proto port on addr, from the cache if the answer is fresh.
func (l *listenProbe) check(proto uint8, addr netip.Addr, port uint16) (bool, error) {
	k := probeKey{proto, addr, port}
	now := l.now()
	l.mu.Lock()
	r, ok := l.cache[k]
	l.mu.Unlock()
	if ok && now.Sub(r.at) < probeTTL {
		return r.inUse, r.err
	}
	inUse, err := l.inUse(proto, addr, port)
	l.mu.Lock()
	if len(l.cache) >= maxProbeCached {
		clear(l.cache)
	}
	l.cache[k] = probeResult{inUse, err, now}
	l.mu.Unlock()
	return inUse, err
}

// loopbackOnly reports whether the netstack should take a new flow to port on the overlay address
// local: nothing holds the port there. When the probe fails (a privileged port without the
// capability to bind it), the kernel gets the flow, as before.
func (l *listenProbe) loopbackOnly(proto uint8, local netip.Addr, port uint16) bool {
	inUse, err := l.check(proto, local, port)
	return err == nil && !inUse
}

// warnUnreachable logs the exposed ports nothing listens on at start: not on 127.0.0.1 (where the
// netstack and the stream path dial) nor, in TUN mode, on the overlay addresses.
func (n *Node) warnUnreachable(l *listenProbe, overlayAddrs []netip.Addr) {
	loopback := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	for _, port := range n.cfg.Expose {
		proto := uint8(packet.ProtoTCP)
		if port.Proto == "udp" {
			proto = packet.ProtoUDP
		}
		reachable, known := false, false
		for _, a := range append([]netip.Addr{loopback}, overlayAddrs...) {
			inUse, err := l.check(proto, a, port.Port)
			if err == nil {
				known = true
				reachable = reachable || inUse
			}
		}
		if known && !reachable {
			where := "127.0.0.1 or all addresses"
			if len(overlayAddrs) > 0 {
				where = "127.0.0.1, the overlay address or all addresses"
			}
			n.log.Warn(fmt.Sprintf("nothing listens on exposed port %s:%d (on %s): peers are refused until a service does", port.Proto, port.Port, where),
				"port", port.Port, "proto", port.Proto)
		}
	}
}
