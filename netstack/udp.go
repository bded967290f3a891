package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// UDP forwarding limits.
const (
	maxUDPFlows    = 1024             // per exposed port
	udpIdleTimeout = 60 * time.Second // a flow without traffic either way is closed
	maxDatagram    = 65535
)

// ListenUDP returns an unconnected UDP socket on the overlay, bound to this node's address of the
// given family ("udp4" or "udp6") and an ephemeral port, allowed to send to broadcast addresses.
// WriteTo reaches any overlay, broadcast or multicast address; ReadFrom returns replies with their
// source.
func (ns *Stack) ListenUDP(network string) (net.PacketConn, error) {
	var local netip.Addr
	for _, p := range ns.cfg.Addrs {
		if (network == "udp6") == p.Addr().Is6() {
			local = p.Addr()
			break
		}
	}
	if !local.IsValid() {
		return nil, fmt.Errorf("netstack: no %s address", network)
	}
	return ns.bindUDP(netip.AddrPortFrom(local, 0))
}

// bindUDP makes an unconnected UDP endpoint bound to ap (an unspecified address binds every address
// of that family, which also receives broadcast and multicast).
func (ns *Stack) bindUDP(ap netip.AddrPort) (*udpConn, error) {
	if ns.isClosed() {
		return nil, errClosedStack
	}
	proto := netProto(ap.Addr())
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: UDP endpoint: %w", tcpErr(terr))
	}
	ep.SocketOptions().SetBroadcast(true)
	if ap.Addr().Is6() {
		ep.SocketOptions().SetV6Only(true) // IPv4 has its own endpoint
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if !ap.Addr().IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: bind UDP %v: %w", ap, tcpErr(terr))
	}
	return newUDPConn(&wq, ep), nil
}

// ExposeUDP forwards datagrams that peers send to port (unicast to this node, broadcast, or
// multicast) to 127.0.0.1:port on the host, one host socket per remote source so that replies go back
// to the right peer; datagrams Config.Admit refuses are dropped. Flows idle for a minute are closed.
func (ns *Stack) ExposeUDP(port uint16) error {
	if port == 0 {
		return errors.New("netstack: cannot expose UDP port 0")
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		ln, err := ns.bindUDP(netip.AddrPortFrom(any, port))
		if err != nil {
			return err
		}
		f := &udpForwarder{ns: ns, ln: ln, port: port, flows: make(map[netip.AddrPort]*udpFlow)}
		if !ns.goTracked(f.run, ln) {
			ln.Close()
			return errClosedStack
		}
	}
	return nil
}

// udpForwarder owns one exposed-port listener and its flows.
type udpForwarder struct {
	ns   *Stack
	ln   *udpConn
	port uint16

	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow
}

type udpFlow struct {
	host     *net.UDPConn   // connected to 127.0.0.1:port
	remote   netip.AddrPort // the peer's address on the overlay
	lastSeen atomic.Int64   // unix nanoseconds of the last datagram from the peer
}

// run reads datagrams from the exposed port until the listener is closed. It runs under goTracked,
// so the wg.Add for each flow's reply goroutine happens while wg is not zero.
func (f *udpForwarder) run() {
	defer f.ns.untrack(f.ln)
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := f.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			f.closeFlows()
			return
		}
		if !f.ns.cfg.Admit("udp", src, f.port) {
			f.ns.stats.forwardsRefused.Add(1)
			continue
		}
		fl := f.flow(src)
		if fl == nil {
			f.ns.stats.forwardsRefused.Add(1)
			continue
		}
		fl.lastSeen.Store(time.Now().UnixNano())
		fl.host.Write(buf[:n]) // UDP: a failed send is a lost datagram
	}
}

// flow returns the flow for src, creating it (and its reply goroutine) if there is room.
func (f *udpForwarder) flow(src netip.AddrPort) *udpFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.flows[src]; ok {
		return fl
	}
	if len(f.flows) >= maxUDPFlows {
		return nil
	}
	ctx, cancel := context.WithTimeout(withFlow(f.ns.ctx, Flow{Src: src, Dst: netip.AddrPortFrom(netip.Addr{}, f.port)}), localDialTimeout)
	c, err := f.ns.cfg.DialLocal(ctx, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(f.port))))
	cancel()
	if err != nil {
		return nil
	}
	host, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil
	}
	fl := &udpFlow{host: host, remote: src}
	fl.lastSeen.Store(time.Now().UnixNano())
	f.flows[src] = fl
	f.ns.wg.Add(1)
	go f.replies(src, fl)
	return fl
}

// replies copies the local service's answers back to the flow's peer until the flow idles out.
func (f *udpForwarder) replies(src netip.AddrPort, fl *udpFlow) {
	defer f.ns.wg.Done()
	buf := make([]byte, maxDatagram)
	var armed time.Time // when the idle deadline was last moved: at most once per second
	for {
		if now := time.Now(); now.Sub(armed) >= time.Second {
			fl.host.SetReadDeadline(now.Add(udpIdleTimeout))
			armed = now
		}
		n, err := fl.host.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, fl.lastSeen.Load())) < udpIdleTimeout {
				armed = time.Time{}
				continue // the peer is still sending; only silence both ways ends a flow
			}
			break
		}
		f.ln.WriteToUDPAddrPort(buf[:n], fl.remote)
	}
	f.mu.Lock()
	if f.flows[src] == fl {
		delete(f.flows, src)
	}
	f.mu.Unlock()
	fl.host.Close()
}

func (f *udpForwarder) closeFlows() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range f.flows {
		fl.host.Close()
	}
}
