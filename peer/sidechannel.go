package peer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/warren-net/warren/control"
)

// The side channel: non-QUIC packets on the node's socket (path probes, relay frames, binding
// responses; formats in package control and probe.go), read from the QUIC transport.

// readSideChannel dispatches the socket's non-QUIC packets until Close.
func (e *Endpoint) readSideChannel() {
	defer e.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, addr, err := e.tr.ReadNonQUICPacket(e.ctx, buf)
		if err != nil {
			return
		}
		e.handleSide(buf[:n], addrPortOf(addr))
	}
}

// handleSide handles one side-channel packet from the socket or a tunnel (tunnel.go).
func (e *Endpoint) handleSide(b []byte, from netip.AddrPort) {
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case control.KindRelayFrom:
		if e.relay.paths.rank(from) < 0 {
			return // only a relay we are logged in to may speak for other peers
		}
		if _, key, payload, err := control.ParseRelay(b); err == nil {
			k, _ := KeyOf(key)
			if e.isPeer(k) { // the relay only forwards between peers; check it anyway
				e.relay.deliver(k, from, payload)
			}
		}
	case kindPing, kindPong:
		e.handleProbe(b, from)
	case control.KindBindingResp:
		if tx, observed, err := control.ParseBindingResponse(b); err == nil {
			e.bindMu.Lock()
			ch := e.bindings[tx]
			e.bindMu.Unlock()
			if ch != nil {
				select {
				case ch <- observed:
				default:
				}
			}
		}
	}
}

// writeSide sends a side-channel packet from the node's socket, or over the tunnel to a server the
// node reaches over TCP.
func (e *Endpoint) writeSide(b []byte, to netip.AddrPort) error {
	if t := e.tunnelTo(to); t != nil {
		_, err := t.tr.WriteTo(b, net.UDPAddrFromAddrPort(to))
		return err
	}
	return e.writeUDP(b, to)
}

// writeUDP sends a side-channel packet from the node's socket.
func (e *Endpoint) writeUDP(b []byte, to netip.AddrPort) error {
	_, err := e.tr.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// SetRelays sets the relays (standalone relays' addresses, the coordination server's) that links
// fall back to when no direct path works: the ones the node is logged in to now, best first, at most
// control.MaxRelays+1. None turns relaying off. Relayed links carry on through whichever of them
// both ends share (relaypath.go); only these relays' frames are accepted.
func (e *Endpoint) SetRelays(relays []netip.AddrPort) {
	e.relay.paths.set(relays)
	if len(relays) == 0 {
		return
	}
	e.mu.RLock()
	for _, ps := range e.peers {
		poke(ps.wake)
	}
	e.mu.RUnlock()
}

// relaying reports whether the node is logged in to some relay.
func (e *Endpoint) relaying() bool { return e.relay.paths.first().IsValid() }

// SetDirect turns direct paths on or off at run time (see Config.NoDirect). Turning them off affects
// new links only; turning them on starts hole punching to every peer that is relayed.
func (e *Endpoint) SetDirect(on bool) {
	e.noDirect.Store(!on)
	e.mu.RLock()
	for _, ps := range e.peers {
		poke(ps.wake)
	}
	e.mu.RUnlock()
}

// RelayDrops counts relayed packets dropped for a full queue or for want of a relay.
func (e *Endpoint) RelayDrops() uint64 { return e.relay.drops.Load() }

// Binding asks the server at addr which address this node's socket has from there (NAT discovery),
// retrying until ctx ends. It returns the observed address and the round-trip time.
func (e *Endpoint) Binding(ctx context.Context, addr netip.AddrPort) (netip.AddrPort, time.Duration, error) {
	return e.binding(ctx, addr, e.writeSide)
}

func (e *Endpoint) binding(ctx context.Context, addr netip.AddrPort, write func([]byte, netip.AddrPort) error) (netip.AddrPort, time.Duration, error) {
	var tx [control.TxIDSize]byte
	rand.Read(tx[:])
	ch := make(chan netip.AddrPort, 1)
	e.bindMu.Lock()
	e.bindings[tx] = ch
	e.bindMu.Unlock()
	defer func() {
		e.bindMu.Lock()
		delete(e.bindings, tx)
		e.bindMu.Unlock()
	}()
	req := control.AppendBindingRequest(nil, tx)
	retry := time.NewTicker(300 * time.Millisecond)
	defer retry.Stop()
	for {
		sent := time.Now()
		if err := write(req, addr); err != nil {
			return netip.AddrPort{}, 0, fmt.Errorf("binding request to %s: %w", addr, err)
		}
		select {
		case obs := <-ch:
			return obs, time.Since(sent), nil
		case <-retry.C:
		case <-ctx.Done():
			return netip.AddrPort{}, 0, fmt.Errorf("no binding response from %s: %w", addr, ctx.Err())
		}
	}
}

// Hairpin reports whether a probe sent to the node's own public address comes back to it, i.e.
// whether its NAT lets two nodes behind it reach each other on their public addresses.
func (e *Endpoint) Hairpin(ctx context.Context, public netip.AddrPort) bool {
	var tx txID
	rand.Read(tx[:])
	ch := make(chan struct{}, 1)
	e.bindMu.Lock()
	e.hairpins[tx] = ch
	e.bindMu.Unlock()
	defer func() {
		e.bindMu.Lock()
		delete(e.hairpins, tx)
		e.bindMu.Unlock()
	}()
	ping := appendProbe(nil, e.cfg.Key, kindPing, e.self, e.self, tx, netip.AddrPort{})
	retry := time.NewTicker(300 * time.Millisecond)
	defer retry.Stop()
	for {
		e.writeSide(ping, public)
		select {
		case <-ch:
			return true
		case <-retry.C:
		case <-ctx.Done():
			return false
		}
	}
}

// NAT mapping behaviours reported by Netcheck.
const (
	MappingIndependent = "endpoint-independent"
	MappingDependent   = "endpoint-dependent"
	MappingUnknown     = "unknown"
)

// NATReport is what Netcheck found out about the node's UDP connectivity.
type NATReport struct {
	UDP     bool           `json:"udp"`              // the coord answered over UDP
	Public  netip.AddrPort `json:"public,omitempty"` // the node's address as the coord sees it
	Mapping string         `json:"mapping"`          // MappingIndependent, MappingDependent or MappingUnknown
	// Allocation is how an endpoint-dependent NAT picks ports, AllocSequential or AllocRandom ("" =
	// not measured); Ports is the pattern of a sequential one, which peers predict (predict.go).
	Allocation string         `json:"allocation,omitempty"`
	Ports      *control.Ports `json:"ports,omitempty"`
	Hairpin    bool           `json:"hairpin"`             // a packet to the own public address comes back
	CoordRTT   time.Duration  `json:"coord_rtt,omitempty"` // round trip to the coord
	Relay      netip.AddrPort `json:"relay,omitempty"`     // the best relay the node is logged in to: new links start there
	RelayRTT   time.Duration  `json:"relay_rtt,omitempty"` // round trip to the relay
	Relays     []RelayRTT     `json:"relays,omitempty"`    // each relay Netcheck was asked to measure
}

// RelayRTT is the round trip to one relay; OK is false if it did not answer.
type RelayRTT struct {
	Addr netip.AddrPort `json:"addr"`
	RTT  time.Duration  `json:"rtt,omitempty"`
	OK   bool           `json:"ok"`
}

// ErrNoUDP is returned by Netcheck when the coordination server does not answer over UDP.
var ErrNoUDP = errors.New("no answer from the coordination server over UDP")

// Netcheck probes the node's connectivity through the coord at coord, using its second port probePort
// (0 = none) to tell mapping behaviours apart (and, for an endpoint-dependent NAT, how it allocates
// ports: portPattern), and measures the round trip to each of relays (binding requests, which relays
// answer too). It takes up to about 3 seconds.
func (e *Endpoint) Netcheck(ctx context.Context, coord netip.AddrPort, probePort uint16, relays []netip.AddrPort) (NATReport, error) {
	rep := NATReport{Mapping: MappingUnknown}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rep.Relays = make([]RelayRTT, len(relays))
	var wg sync.WaitGroup
	for i, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			defer rcancel()
			_, rtt, err := e.Binding(rctx, r)
			rep.Relays[i] = RelayRTT{Addr: r, RTT: rtt, OK: err == nil}
		}()
	}
	defer wg.Wait() // before any return hands rep.Relays (a shared array) to the caller
	obs, rtt, err := e.Binding(ctx, coord)
	if err != nil {
		return rep, fmt.Errorf("%w: %v", ErrNoUDP, err)
	}
	rep.UDP, rep.Public, rep.CoordRTT = true, obs, rtt
	if r := e.relay.paths.first(); r.IsValid() {
		rep.Relay = r
		if r == coord {
			rep.RelayRTT = rtt
		} else if _, rrtt, err := e.Binding(ctx, r); err == nil {
			rep.RelayRTT = rrtt
		}
	}
	if e.Tunneled(coord) {
		// The binding went over the TCP fallback: it proves nothing about UDP, the address it shows is
		// the coord's name for the stream, and the probe port and hairpin (UDP only) would only wait.
		rep.UDP, rep.Public = false, netip.AddrPort{}
		return rep, nil
	}
	if probePort != 0 {
		if obs2, _, err := e.Binding(ctx, netip.AddrPortFrom(coord.Addr(), probePort)); err == nil {
			rep.Mapping = MappingIndependent
			if obs2 != obs {
				rep.Mapping = MappingDependent
				rep.Allocation, rep.Ports = e.PortPattern(ctx, coord, probePort)
			}
		}
	}
	hctx, hcancel := context.WithTimeout(ctx, time.Second)
	rep.Hairpin = e.Hairpin(hctx, obs)
	hcancel()
	return rep, nil
}

// PortPattern tells how the node's endpoint-dependent NAT allocates ports (classifyPorts): it makes
// three new mappings in a row, from two fresh sockets (one to the coord's main and probe ports, the
// other to its main port), and compares their public ports. Fresh sockets, because the node's own
// socket may hold mappings to both ports from an earlier run. Mappings the node makes meanwhile (a
// birthday attempt's sockets) can make a sequential NAT read as random, so a random reading is
// measured once more. "" if that could not be measured.
func (e *Endpoint) PortPattern(ctx context.Context, coord netip.AddrPort, probePort uint16) (string, *control.Ports) {
	if !coord.Addr().Unmap().Is4() {
		return "", nil // the extra sockets are IPv4 (extraBind)
	}
	var alloc string
	var pattern *control.Ports
	for range 2 {
		ports, err := e.threeMappings(ctx, coord, netip.AddrPortFrom(coord.Addr(), probePort))
		if err != nil {
			e.log.Debug("NAT discovery: port probes", "error", err)
			return "", nil
		}
		alloc, pattern = classifyPorts(ports)
		e.log.Debug("NAT discovery: port allocation", "ports", ports, "allocation", alloc)
		if alloc == AllocSequential {
			break
		}
	}
	return alloc, pattern
}

// threeMappings makes three new NAT mappings in a row (PortPattern) and returns their public ports.
func (e *Endpoint) threeMappings(ctx context.Context, coord, probe netip.AddrPort) ([3]uint16, error) {
	var ports [3]uint16
	bind, err := e.extraBind()
	if err != nil {
		return ports, err
	}
	var socks [2]*net.UDPConn
	for i := range socks {
		c, err := net.ListenUDP("udp4", bind)
		if err != nil {
			return ports, fmt.Errorf("socket for the port probes: %w", err)
		}
		defer c.Close()
		socks[i] = c
	}
	for i, p := range []struct {
		c  *net.UDPConn
		to netip.AddrPort
	}{{socks[0], coord}, {socks[0], probe}, {socks[1], coord}} {
		obs, err := bindingOn(ctx, p.c, p.to)
		if err != nil {
			return ports, err
		}
		ports[i] = obs.Port()
	}
	return ports, nil
}

// bindingOn asks the server at addr which address socket c has from there, as Binding does for the
// node's socket, retrying until ctx ends. c is read here and must not be read elsewhere meanwhile.
func bindingOn(ctx context.Context, c *net.UDPConn, addr netip.AddrPort) (netip.AddrPort, error) {
	var tx [control.TxIDSize]byte
	rand.Read(tx[:])
	req := control.AppendBindingRequest(nil, tx)
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		if _, err := c.WriteToUDPAddrPort(req, addr); err != nil {
			return netip.AddrPort{}, fmt.Errorf("binding request to %s: %w", addr, err)
		}
		until := time.Now().Add(300 * time.Millisecond) // then ask again
		if d, ok := ctx.Deadline(); ok && d.Before(until) {
			until = d
		}
		c.SetReadDeadline(until)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("binding response from %s: %w", addr, err)
			}
			if unmapped(from) != unmapped(addr) {
				continue
			}
			if rtx, obs, err := control.ParseBindingResponse(buf[:n]); err == nil && rtx == tx {
				return obs, nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no binding response from %s: %w", addr, ctx.Err())
}
