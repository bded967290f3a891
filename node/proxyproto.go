package node

import (
	"encoding/binary"
	"net/netip"
)

// proxyV2Sig is the 12-byte signature that starts every PROXY protocol v2 header
// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt, section 2.2).
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// appendProxyV2 appends a PROXY protocol v2 header for a TCP connection from src to dst (version 2,
// command PROXY; TCP over IPv4 when both are IPv4, else TCP over IPv6 with IPv4 mapped). An exposed
// port with +proxy gets it first on each local connection, so nginx or HAProxy see the peer's
// overlay address instead of 127.0.0.1.
func appendProxyV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig[:]...)
	b = append(b, 0x21) // version 2, PROXY
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() && d.Is4() {
		b = append(b, 0x11) // AF_INET, STREAM
		b = binary.BigEndian.AppendUint16(b, 12)
		b = append(b, s.AsSlice()...)
		b = append(b, d.AsSlice()...)
	} else {
		b = append(b, 0x21) // AF_INET6, STREAM
		b = binary.BigEndian.AppendUint16(b, 36)
		s16, d16 := netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
		b = append(b, s16.AsSlice()...)
		b = append(b, d16.AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}
