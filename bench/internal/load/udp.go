package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"
)

// ServeUDP echoes every datagram c receives back to its sender until c is closed.
func ServeUDP(c net.PacketConn) error {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		c.WriteTo(buf[:n], from) // a failed echo is a lost packet, which the client counts
	}
}

// UDPPath carries datagrams to a UDP echo server and back: a plain connected socket, or a SOCKS5
// UDP association.
type UDPPath interface {
	// Send sends one datagram's payload.
	Send(p []byte) error
	// Recv reads one datagram's payload into p before deadline.
	Recv(p []byte, deadline time.Time) (int, error)
	Close() error
}

// DialUDP returns a path over a plain UDP socket connected to dest.
func DialUDP(dest netip.AddrPort) (UDPPath, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dest))
	if err != nil {
		return nil, fmt.Errorf("udp dial %v: %w", dest, err)
	}
	return plainUDP{c}, nil
}

type plainUDP struct{ c *net.UDPConn }

func (u plainUDP) Send(p []byte) error { _, err := u.c.Write(p); return err }
func (u plainUDP) Recv(p []byte, deadline time.Time) (int, error) {
	u.c.SetReadDeadline(deadline)
	return u.c.Read(p)
}
func (u plainUDP) Close() error { return u.c.Close() }

// AssociateUDP opens a SOCKS5 UDP association (RFC 1928, no authentication) at the proxy proxyAddr
// and returns a path that sends to dest (an IPv4 address) through it. The association lasts as long
// as the path: Close ends its TCP control connection.
func AssociateUDP(ctx context.Context, proxyAddr string, dest netip.AddrPort) (UDPPath, error) {
	if !dest.Addr().Is4() {
		return nil, fmt.Errorf("socks udp: destination %v is not IPv4", dest)
	}
	var d net.Dialer
	ctrl, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("socks udp: dial proxy: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			ctrl.Close()
		}
	}()
	ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	proxyIP := ctrl.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ctrl.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), 0)))
	if err != nil {
		return nil, fmt.Errorf("socks udp: client socket: %w", err)
	}
	defer func() {
		if !ok {
			uc.Close()
		}
	}()
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := ctrl.Write([]byte{5, 1, 0}); err != nil {
		return nil, fmt.Errorf("socks udp: greeting: %w", err)
	}
	var resp [2]byte
	if _, err := io.ReadFull(ctrl, resp[:]); err != nil || resp != [2]byte{5, 0} {
		return nil, fmt.Errorf("socks udp: greeting answered %v: %v", resp, err)
	}
	req := []byte{5, 3, 0, 1}
	req = append(req, local.Addr().Unmap().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, local.Port())
	if len(req) != 10 {
		return nil, fmt.Errorf("socks udp: client address %v is not IPv4", local)
	}
	if _, err := ctrl.Write(req); err != nil {
		return nil, fmt.Errorf("socks udp: associate: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(ctrl, head[:]); err != nil {
		return nil, fmt.Errorf("socks udp: associate reply: %w", err)
	}
	if head[1] != 0 {
		return nil, fmt.Errorf("socks udp: associate refused, reply code %d", head[1])
	}
	var relayIP netip.Addr
	switch head[3] {
	case 1:
		var a [4]byte
		if _, err := io.ReadFull(ctrl, a[:]); err != nil {
			return nil, fmt.Errorf("socks udp: associate reply: %w", err)
		}
		relayIP = netip.AddrFrom4(a)
	case 4:
		var a [16]byte
		if _, err := io.ReadFull(ctrl, a[:]); err != nil {
			return nil, fmt.Errorf("socks udp: associate reply: %w", err)
		}
		relayIP = netip.AddrFrom16(a)
	default:
		return nil, fmt.Errorf("socks udp: associate reply address type %d", head[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(ctrl, port[:]); err != nil {
		return nil, fmt.Errorf("socks udp: associate reply: %w", err)
	}
	if relayIP.IsUnspecified() {
		relayIP = proxyIP
	}
	relay := netip.AddrPortFrom(relayIP.Unmap(), binary.BigEndian.Uint16(port[:]))
	ctrl.SetDeadline(time.Time{})
	hdr := []byte{0, 0, 0, 1}
	hdr = append(hdr, dest.Addr().AsSlice()...)
	hdr = binary.BigEndian.AppendUint16(hdr, dest.Port())
	ok = true
	return &socksUDP{ctrl: ctrl, c: uc, relay: net.UDPAddrFromAddrPort(relay), hdr: hdr, buf: make([]byte, 64<<10)}, nil
}

// socksUDP is one SOCKS5 UDP association: each datagram to the relay starts with the header naming
// the destination; each one back starts with a header naming its source.
type socksUDP struct {
	ctrl  net.Conn
	c     *net.UDPConn
	relay *net.UDPAddr
	hdr   []byte
	buf   []byte
}

func (s *socksUDP) Send(p []byte) error {
	b := append(append(s.buf[:0], s.hdr...), p...)
	_, err := s.c.WriteToUDP(b, s.relay)
	return err
}

func (s *socksUDP) Recv(p []byte, deadline time.Time) (int, error) {
	s.c.SetReadDeadline(deadline)
	for {
		n, err := s.c.Read(s.buf)
		if err != nil {
			return 0, err
		}
		b := s.buf[:n]
		if len(b) < 4 || b[2] != 0 {
			continue
		}
		skip := map[byte]int{1: 4 + 4 + 2, 4: 4 + 16 + 2}[b[3]]
		if skip == 0 || len(b) < skip {
			continue
		}
		return copy(p, b[skip:]), nil
	}
}

func (s *socksUDP) Close() error { return errors.Join(s.c.Close(), s.ctrl.Close()) }

// UDPResult is one UDP round-trip measurement.
type UDPResult struct {
	RTTs []time.Duration // round trips of the datagrams that came back, sorted
	Lost int             // datagrams not back within the loss timeout
}

// UDPRTT sends n datagrams of size bytes (at least 8) through p one at a time, each numbered, and
// waits for each one's echo before the next: every interval (0: back to back). A datagram not back
// within lossAfter counts as lost; a late echo of an earlier datagram is skipped.
func UDPRTT(ctx context.Context, p UDPPath, n, size int, interval, lossAfter time.Duration) (UDPResult, error) {
	size = max(size, 8)
	out, in := make([]byte, size), make([]byte, 64<<10)
	var res UDPResult
	next := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if interval > 0 {
			if err := Sleep(ctx, time.Until(next)); err != nil {
				return res, err
			}
			next = next.Add(interval)
			if now := time.Now(); next.Before(now) { // fell behind (a loss): do not burst to catch up
				next = now
			}
		}
		binary.BigEndian.PutUint64(out, uint64(i))
		start := time.Now()
		if err := p.Send(out); err != nil {
			return res, fmt.Errorf("udp send %d: %w", i, err)
		}
		deadline := start.Add(lossAfter)
		for {
			m, err := p.Recv(in, deadline)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					res.Lost++
					break
				}
				return res, fmt.Errorf("udp receive %d: %w", i, err)
			}
			if m >= 8 && binary.BigEndian.Uint64(in) == uint64(i) {
				res.RTTs = append(res.RTTs, time.Since(start))
				break
			}
		}
	}
	slices.Sort(res.RTTs)
	return res, nil
}
