package socks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"
)

// UDP ASSOCIATE (RFC 1928 §7). Every datagram between the client and the relay socket carries:
//
//	+----+------+------+----------+----------+----------+
//	|RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//	| 2  |  1   |  1   | Variable |    2     | Variable |
//	+----+------+------+----------+----------+----------+
//
// Fragmentation is not supported: datagrams with FRAG != 0 are dropped and counted.

// UDP limits.
const (
	maxUDPDatagram   = 65535
	defaultUDPIdle   = 2 * time.Minute // an association with no datagrams either way ends (Config.UDPIdle)
	maxNamesPerAssoc = 256             // resolved names cached per association
	// maxDestsPerAssoc bounds the destinations an association remembers having sent to (replies
	// are accepted only from those); past it the oldest is forgotten.
	maxDestsPerAssoc = 1024
	// defaultMaxAssociations bounds the live associations of a Server. Each holds two sockets, two
	// goroutines and two 64 KiB buffers: about 130 KiB, so 1024 of them about 130 MiB at most.
	defaultMaxAssociations = 1024
)

// PushHeadroom is the room a DatagramPusher leaves before each datagram, enough for the SOCKS5
// header of a reply (at most 22 bytes, for an IPv6 source), so the reply goes out without a copy.
const PushHeadroom = 32

// DatagramPusher is a socket from Config.ListenUDP that can hand each datagram it receives to a
// function, called on its own reader goroutines, instead of queueing it for ReadFrom: one hand-off
// between goroutines (a wake-up of a parked thread, at a game's packet rate) less per reply.
type DatagramPusher interface {
	// PushTo makes the socket call h for every datagram from now on (and for any it queued), from
	// one or more goroutines at once, until it is closed; ReadFrom then returns nothing. The
	// datagram is buf[off:]; buf[:off], at least PushHeadroom bytes, is h's to write; h must not
	// keep buf after it returns.
	PushTo(h func(buf []byte, off int, from netip.AddrPort))
}

// udpAddrPortWriter is a socket that sends to a netip.AddrPort without allocating a net.Addr.
type udpAddrPortWriter interface {
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
}

// deadlineEvery bounds how often the relay socket's idle deadline is moved: at most once per
// second, not once per datagram (each move takes the runtime's timer locks).
const deadlineEvery = time.Second

// UDPHeader is the destination (or, on replies, the source) of a relayed datagram.
type UDPHeader struct {
	Frag byte
	Addr netip.Addr // set for IPv4/IPv6
	Name string     // set for a domain name
	Port uint16
}

var errBadUDPHeader = errors.New("bad SOCKS5 UDP header")

// ParseUDPHeader splits a client datagram into its header and payload.
func ParseUDPHeader(b []byte) (UDPHeader, []byte, error) {
	var h UDPHeader
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return h, nil, errBadUDPHeader
	}
	h.Frag = b[2]
	rest := b[4:]
	switch b[3] {
	case statute.ATYPIPv4:
		if len(rest) < 4+2 {
			return h, nil, errBadUDPHeader
		}
		h.Addr = netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
	case statute.ATYPIPv6:
		if len(rest) < 16+2 {
			return h, nil, errBadUDPHeader
		}
		h.Addr = netip.AddrFrom16([16]byte(rest[:16])).Unmap()
		rest = rest[16:]
	case statute.ATYPDomain:
		if len(rest) < 1 || rest[0] == 0 {
			return h, nil, errBadUDPHeader
		}
		n := 1 + int(rest[0]) // as an int: 1+rest[0] wraps to 0 for a 255-byte name
		if len(rest) < n+2 {
			return h, nil, errBadUDPHeader
		}
		h.Name = string(rest[1:n])
		rest = rest[n:]
	default:
		return h, nil, errBadUDPHeader
	}
	h.Port = binary.BigEndian.Uint16(rest)
	return h, rest[2:], nil
}

// AppendUDPHeader appends the header for a reply from src.
func AppendUDPHeader(b []byte, src netip.AddrPort) []byte {
	b = append(b, 0, 0, 0)
	if a := src.Addr().Unmap(); a.Is4() {
		b = append(b, statute.ATYPIPv4)
		b = append(b, a.AsSlice()...)
	} else {
		b = append(b, statute.ATYPIPv6)
		b = append(b, a.AsSlice()...)
	}
	return binary.BigEndian.AppendUint16(b, src.Port())
}

// UDPStats counts what UDP associations dropped.
type UDPStats struct {
	Fragmented, Malformed, Foreign, Unresolved atomic.Uint64
	// Unsolicited counts datagrams to an association from an address its client never sent to.
	Unsolicited atomic.Uint64
}

// handleAssociate serves one UDP ASSOCIATE: a relay socket on the proxy's own address, bound to the
// client's IP, living as long as the TCP control connection and its idle timeout, which closes the
// control connection too: the slot is free, and the client learns that its relay is gone.
func (s *Server) handleAssociate(_ context.Context, w io.Writer, req *socks5.Request) error {
	s.requests.SOCKSUDP.Add(1)
	client, ok := w.(net.Conn)
	if !ok || s.cfg.ListenUDP == nil {
		socks5.SendReply(w, statute.RepCommandNotSupported, nil)
		return errors.New("UDP ASSOCIATE not supported")
	}
	if !s.reserveAssociation() {
		socks5.SendReply(w, statute.RepServerFailure, nil)
		return fmt.Errorf("UDP ASSOCIATE refused: %d associations open", s.cfg.MaxAssociations)
	}
	defer s.associations.Add(-1)
	client.SetDeadline(time.Time{})
	localIP := addrOf(client.LocalAddr())
	clientIP := addrOf(client.RemoteAddr())
	if !localIP.IsValid() || !clientIP.IsValid() {
		// A client on a unix socket has no address its datagrams could be checked against.
		socks5.SendReply(w, statute.RepCommandNotSupported, nil)
		return errors.New("UDP ASSOCIATE needs a TCP client")
	}
	relaySock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localIP, 0)))
	if err != nil {
		socks5.SendReply(w, statute.RepServerFailure, nil)
		return fmt.Errorf("UDP relay socket: %w", err)
	}
	defer relaySock.Close()
	out, err := s.cfg.ListenUDP()
	if err != nil {
		socks5.SendReply(w, statute.RepServerFailure, nil)
		return fmt.Errorf("UDP socket: %w", err)
	}
	defer out.Close()
	if err := socks5.SendReply(w, statute.RepSuccess, relaySock.LocalAddr()); err != nil {
		return err
	}
	a := &association{s: s, relay: relaySock, out: out, control: client, clientIP: clientIP, names: make(map[string]netip.Addr),
		sent: make(map[netip.AddrPort]struct{})}
	// The client may name its source port in the request; otherwise the first datagram fixes it.
	if req.RawDestAddr != nil && req.RawDestAddr.Port != 0 {
		a.setClient(netip.AddrPortFrom(clientIP, uint16(req.RawDestAddr.Port)))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.fromClient() }()
	if p, ok := out.(DatagramPusher); ok {
		p.PushTo(a.reply)
	} else {
		wg.Add(1)
		go func() { defer wg.Done(); a.toClient() }()
	}
	// The association lives while the control connection does (RFC 1928 §7).
	io.Copy(io.Discard, client)
	relaySock.Close()
	out.Close()
	wg.Wait()
	return nil
}

type association struct {
	s        *Server
	relay    *net.UDPConn
	out      net.PacketConn
	control  net.Conn // the client's TCP connection
	clientIP netip.Addr
	lastSeen atomic.Int64

	mu       sync.Mutex
	client   netip.AddrPort
	verified bool // client passed Config.UDPClientAllowed
	names    map[string]netip.Addr
	// sent holds the destinations the client sent to (at most maxDestsPerAssoc, oldest first in
	// sentOrder): replies come only from them, or from peers once it sent to a fan-out address.
	sent      map[netip.AddrPort]struct{}
	sentOrder []netip.AddrPort
	fannedOut bool
}

// reserveAssociation counts a new association if the Server has room for it.
func (s *Server) reserveAssociation() bool {
	if s.associations.Add(1) > int64(s.cfg.MaxAssociations) {
		s.associations.Add(-1)
		return false
	}
	return true
}

// noteSent records that the client sent to dst.
func (a *association) noteSent(dst netip.AddrPort) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.s.cfg.FanOut != nil && a.s.cfg.FanOut(dst.Addr()) {
		a.fannedOut = true
		return
	}
	if _, ok := a.sent[dst]; ok {
		return
	}
	if len(a.sentOrder) >= maxDestsPerAssoc {
		delete(a.sent, a.sentOrder[0])
		a.sentOrder = a.sentOrder[1:]
	}
	a.sent[dst] = struct{}{}
	a.sentOrder = append(a.sentOrder, dst)
}

// replyAllowed reports whether a datagram from src may reach the client: src is a destination the
// client sent to, or a peer (Config.Peer) after the client sent to a fan-out address (a game's LAN
// discovery is answered from the servers' own addresses).
func (a *association) replyAllowed(src netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.sent[src]; ok {
		return true
	}
	return a.fannedOut && a.s.cfg.Peer != nil && a.s.cfg.Peer(src.Addr())
}

func (a *association) setClient(ap netip.AddrPort) {
	a.mu.Lock()
	a.client = ap
	a.mu.Unlock()
}

// claim reports whether a datagram from from (the client's IP) is the client's: the first one that
// passes Config.UDPClientAllowed, from the port the request named if it named one, fixes the client.
func (a *association) claim(from netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verified {
		return from == a.client
	}
	if a.client.IsValid() && from != a.client {
		return false
	}
	if f := a.s.cfg.UDPClientAllowed; f != nil && !f(from) {
		return false
	}
	a.client, a.verified = from, true
	return true
}

func (a *association) clientAddr() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// fromClient relays the client's datagrams to their destinations.
func (a *association) fromClient() {
	buf := make([]byte, maxUDPDatagram)
	writeTo := func(b []byte, to netip.AddrPort) { a.out.WriteTo(b, net.UDPAddrFromAddrPort(to)) }
	if w, ok := a.out.(udpAddrPortWriter); ok {
		writeTo = func(b []byte, to netip.AddrPort) { w.WriteToUDPAddrPort(b, to) }
	}
	var armed time.Time // when the idle deadline was last moved
	for {
		if now := time.Now(); now.Sub(armed) >= deadlineEvery {
			a.relay.SetReadDeadline(now.Add(a.s.cfg.UDPIdle))
			armed = now
		}
		n, from, err := a.relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, a.lastSeen.Load())) < a.s.cfg.UDPIdle {
				armed = time.Time{}
				continue
			}
			a.out.Close() // idle or closed: end the association
			a.control.Close()
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		// Only the client that asked may use the relay.
		if from.Addr() != a.clientIP {
			a.s.udp.Foreign.Add(1)
			continue
		}
		if !a.claim(from) {
			a.s.udp.Foreign.Add(1)
			continue
		}
		h, payload, err := ParseUDPHeader(buf[:n])
		if err != nil {
			a.s.udp.Malformed.Add(1)
			continue
		}
		if h.Frag != 0 {
			a.s.udp.Fragmented.Add(1)
			continue
		}
		dst, ok := a.resolve(h)
		if !ok {
			a.s.udp.Unresolved.Add(1)
			continue
		}
		a.lastSeen.Store(time.Now().UnixNano())
		to := netip.AddrPortFrom(dst.Unmap(), h.Port)
		a.noteSent(to)
		writeTo(payload, to)
	}
}

func (a *association) resolve(h UDPHeader) (netip.Addr, bool) {
	if h.Name == "" {
		return h.Addr, true
	}
	a.mu.Lock()
	ip, ok := a.names[h.Name]
	a.mu.Unlock()
	if ok {
		return ip, true
	}
	if a.s.cfg.Resolve == nil {
		return netip.Addr{}, false
	}
	ctx, cancel := context.WithTimeout(a.s.ctx, 5*time.Second)
	ip, err := a.s.cfg.Resolve(ctx, h.Name)
	cancel()
	if err != nil {
		return netip.Addr{}, false
	}
	a.mu.Lock()
	if len(a.names) < maxNamesPerAssoc {
		a.names[h.Name] = ip
	}
	a.mu.Unlock()
	return ip, true
}

// toClient relays replies back to the client with a header naming their source, for a socket that
// is not a DatagramPusher.
func (a *association) toClient() {
	buf := make([]byte, PushHeadroom+maxUDPDatagram)
	for {
		n, from, err := a.out.ReadFrom(buf[PushHeadroom:])
		if err != nil {
			a.relay.Close()
			return
		}
		if src, ok := from.(*net.UDPAddr); ok {
			a.reply(buf[:PushHeadroom+n], PushHeadroom, src.AddrPort())
		}
	}
}

// reply sends the datagram buf[off:] from src to the client, with the header naming src written
// into buf[:off] right before it, so the payload is not copied. Safe for concurrent use.
func (a *association) reply(buf []byte, off int, src netip.AddrPort) {
	c := a.clientAddr()
	if !c.IsValid() {
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if !a.replyAllowed(src) {
		a.s.udp.Unsolicited.Add(1)
		return
	}
	a.lastSeen.Store(time.Now().UnixNano())
	var h [22]byte
	hdr := AppendUDPHeader(h[:0], src)
	start := off - len(hdr)
	copy(buf[start:], hdr)
	a.relay.WriteToUDPAddrPort(buf[start:], c)
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}
