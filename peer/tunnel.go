package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"
)

// The TCP fallback: when a server (the coord, a standalone relay) does not answer over UDP, the
// node carries the same QUIC connection and side-channel packets to it over a tunnel
// (Config.Tunnel: framed TLS, package tcptun) on a QUIC transport of its own, and keeps trying UDP.

// Fallback timings.
const (
	// TunnelAfter is how long a dial to a server waits for an answer over UDP before it also goes
	// over the tunnel.
	TunnelAfter = 2 * time.Second
	// udpRecheck is how often a tunnelled server is asked over UDP whether UDP works again.
	udpRecheck = 10 * time.Second
)

// PathRelayTCP is a relayed link whose relay the node reaches over TCP (Status; links themselves
// are PathRelay).
const PathRelayTCP = "relay-tcp"

// tunnel is the TCP fallback to one server.
type tunnel struct {
	addr netip.AddrPort
	conn net.PacketConn
	tr   *quic.Transport
	done chan struct{} // closed when the tunnel is removed
}

// Tunneled reports whether the node reaches the server at addr over TCP now.
func (e *Endpoint) Tunneled(addr netip.AddrPort) bool { return e.tunnelTo(addr) != nil }

func (e *Endpoint) tunnelTo(addr netip.AddrPort) *tunnel {
	e.tunMu.Lock()
	defer e.tunMu.Unlock()
	return e.tunnels[unmapAP(addr)]
}

func unmapAP(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// DialControl opens a QUIC connection to a server (the coordination server, a relay) from the node's
// socket; tlsConf carries the ALPN and the server key check. With Config.Tunnel, a server that does
// not answer over UDP within TunnelAfter is dialed over a TCP tunnel instead, and stays there until
// it answers over UDP again (checked every udpRecheck: then the tunnel closes, its connections with
// it, and the next dial is over UDP). While another server is reached over TCP, a new one is dialed
// over TCP at once.
func (e *Endpoint) DialControl(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
	ua := net.UDPAddrFromAddrPort(addr)
	if t := e.tunnelTo(addr); t != nil {
		return t.tr.Dial(ctx, ua, tlsConf, conf)
	}
	if e.cfg.Tunnel == nil {
		return e.tr.Dial(ctx, ua, tlsConf, conf)
	}
	if e.anyTunnel() {
		// Another server answers only over TCP: UDP is most likely blocked here, so do not make this
		// one wait 2 s too. The recheck moves it back to UDP within udpRecheck if UDP does work.
		return e.dialTunnel(ctx, addr, tlsConf, conf, nil)
	}
	uctx, cancel := context.WithTimeout(ctx, TunnelAfter)
	conn, err := e.tr.Dial(uctx, ua, tlsConf, conf)
	cancel()
	if err == nil || ctx.Err() != nil || !noAnswer(err) {
		return conn, err
	}
	e.log.Debug("no answer over UDP, trying TCP", "server", addr, "error", err)
	return e.dialTunnel(ctx, addr, tlsConf, conf, err)
}

// dialTunnel opens a tunnel to addr and dials over it; udpErr is why UDP was not used (nil: skipped).
func (e *Endpoint) dialTunnel(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config, udpErr error) (*quic.Conn, error) {
	t, err := e.openTunnel(ctx, addr)
	if err != nil {
		if udpErr != nil {
			return nil, fmt.Errorf("%w; over TCP: %w", udpErr, err)
		}
		return nil, fmt.Errorf("over TCP: %w", err)
	}
	conn, err := t.tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsConf, conf)
	if err != nil {
		e.removeTunnel(t)
		return nil, fmt.Errorf("over TCP: %w", err)
	}
	why := "no answer over UDP"
	if udpErr == nil {
		why = "other servers answer over TCP only"
	}
	e.log.Info("reaching server over TCP", "server", addr, "why", why)
	return conn, nil
}

// anyTunnel reports whether some server is reached over TCP now.
func (e *Endpoint) anyTunnel() bool {
	e.tunMu.Lock()
	defer e.tunMu.Unlock()
	return len(e.tunnels) > 0
}

// noAnswer reports whether a dial failed without the server answering — a timeout, or a send the
// host refused (a local firewall: EPERM) — as opposed to the server closing or refusing, or a
// handshake whose check failed, which TCP would not change.
func noAnswer(err error) bool {
	var ae *quic.ApplicationError
	var te *quic.TransportError
	var sr *quic.StatelessResetError
	var vn *quic.VersionNegotiationError
	switch {
	case errors.As(err, &ae), errors.As(err, &sr), errors.As(err, &vn):
		return false
	case errors.As(err, &te):
		return !te.Remote && !te.ErrorCode.IsCryptoError()
	}
	return true
}

// openTunnel opens the tunnel to addr and starts its reader and its UDP recheck.
func (e *Endpoint) openTunnel(ctx context.Context, addr netip.AddrPort) (*tunnel, error) {
	addr = unmapAP(addr)
	pc, err := e.cfg.Tunnel(ctx, addr)
	if err != nil {
		return nil, err
	}
	t := &tunnel{addr: addr, conn: pc, tr: &quic.Transport{Conn: pc, ConnectionIDLength: connIDLen}, done: make(chan struct{})}
	e.tunMu.Lock()
	if e.ctx.Err() != nil || e.tunnels[addr] != nil {
		old := e.tunnels[addr]
		e.tunMu.Unlock()
		pc.Close()
		if old == nil {
			return nil, ErrClosed
		}
		return old, nil
	}
	e.tunnels[addr] = t
	e.wg.Add(2) // under tunMu: Close's closeTunnels comes after, and its wg.Wait too
	e.tunMu.Unlock()
	go e.readTunnel(t)
	go e.recheckUDP(t)
	e.tunnelsChanged()
	return t, nil
}

// removeTunnel closes t (and every connection over it). Idempotent.
func (e *Endpoint) removeTunnel(t *tunnel) {
	e.tunMu.Lock()
	if e.tunnels[t.addr] != t {
		e.tunMu.Unlock()
		return
	}
	delete(e.tunnels, t.addr)
	close(t.done)
	e.tunMu.Unlock()
	t.tr.Close()
	t.conn.Close()
	e.tunnelsChanged()
}

// tunnelsChanged tells the owner (Config.OnTunnel) that some server moved between UDP and TCP.
func (e *Endpoint) tunnelsChanged() {
	if e.cfg.OnTunnel != nil {
		e.cfg.OnTunnel()
	}
}

// readTunnel serves the tunnel's side channel until it ends, then removes it.
func (e *Endpoint) readTunnel(t *tunnel) {
	defer e.wg.Done()
	defer e.removeTunnel(t)
	buf := make([]byte, 2048)
	for {
		n, _, err := t.tr.ReadNonQUICPacket(e.ctx, buf)
		if err != nil {
			return
		}
		e.handleSide(buf[:n], t.addr)
	}
}

// recheckUDP asks the server over UDP every udpRecheck whether UDP works again; when it answers, the
// tunnel closes, and the owner's reconnect dials over UDP.
func (e *Endpoint) recheckUDP(t *tunnel) {
	defer e.wg.Done()
	tick := time.NewTicker(udpRecheck)
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.done:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(e.ctx, TunnelAfter)
		_, _, err := e.binding(ctx, t.addr, e.writeUDP)
		cancel()
		if err == nil {
			e.log.Info("server answers over UDP again: leaving TCP", "server", t.addr)
			e.removeTunnel(t)
			return
		}
	}
}

// closeTunnels removes every tunnel (Close).
func (e *Endpoint) closeTunnels() {
	e.tunMu.Lock()
	ts := make([]*tunnel, 0, len(e.tunnels))
	for _, t := range e.tunnels {
		ts = append(ts, t)
	}
	e.tunMu.Unlock()
	for _, t := range ts {
		e.removeTunnel(t)
	}
}
