// Package packettest builds IPv4 and IPv6 packets for tests of code that reads them (package packet
// and the node's filters). Checksums are left zero: callers that need them compute them with
// packet.Checksum. Only tests import it.
package packettest

import (
	"encoding/binary"
	"net/netip"
)

// IP builds an IPv4 or IPv6 packet (by src's family) of protocol proto around transport message t.
func IP(src, dst netip.Addr, proto uint8, t []byte) []byte {
	if src.Is4() {
		p := make([]byte, 20, 20+len(t))
		p[0], p[8], p[9] = 0x45, 64, proto
		binary.BigEndian.PutUint16(p[2:], uint16(20+len(t)))
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		return append(p, t...)
	}
	p := make([]byte, 40, 40+len(t))
	p[0], p[6], p[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(t)))
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, t...)
}

// TCP builds a 20-byte TCP header (sequence 1000, acknowledgement 2000) with flags, then payload.
func TCP(sport, dport uint16, flags uint8, payload string) []byte {
	t := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], 1000)
	binary.BigEndian.PutUint32(t[8:], 2000)
	t[12], t[13] = 5<<4, flags
	return append(t, payload...)
}

// UDP builds an 8-byte UDP header.
func UDP(sport, dport uint16) []byte {
	t := make([]byte, 8)
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	return t
}

// ICMP builds an ICMP or ICMPv6 message of type typ with identifier id, then rest (for an error,
// the quoted packet).
func ICMP(typ uint8, id uint16, rest []byte) []byte {
	t := make([]byte, 8, 8+len(rest))
	t[0] = typ
	binary.BigEndian.PutUint16(t[4:], id)
	return append(t, rest...)
}
