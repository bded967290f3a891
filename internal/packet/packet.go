// Package packet reads and builds the few parts of IPv4 and IPv6 packets that the node's packet
// filters need: addresses, protocol, ports, TCP flags, ICMP kind, fragments (Parse, Addrs); the flow
// a packet opens or belongs to and a bounded table of recent flows (FlowKey, FlowTable); whether a
// packet is a bare TCP acknowledgement (PureACK); and the TCP
// RST that refuses a segment (TCPReset) and a UDP reply (UDPReply), with the RFC 1071 Checksum.
//
// It reads untrusted bytes (packets from peers) and must never panic or allocate on them; Parse is
// fuzzed. It knows nothing of warren: not peers, access rules, the overlay's addresses, exposed ports
// or which side of the node owns a flow (a FlowTable stores an owner byte it does not interpret). It
// imports only the standard library.
//
// Layout read by Parse: the IPv4 header (IHL, fragment offset at bytes 6-7, protocol at 9, source
// at 12, destination at 16) or the IPv6 header (next header at 6, source at 8, destination at 24)
// followed by at most 7 hop-by-hop, routing, destination-options or fragment extension headers;
// then the first 4 transport bytes (ports), the TCP flags at byte 13, or the ICMP type at byte 0
// and echo identifier at bytes 4-5.
package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags.
const (
	TCPFIN = 0x01
	TCPSYN = 0x02
	TCPRST = 0x04
	TCPACK = 0x10
)

// maxNextHeaders bounds the IPv6 next-header fields Parse follows: at most 7 extension headers
// before the transport header; a packet with more does not parse.
const maxNextHeaders = 8

// Packet is what the filters need to know about an IP packet. Its slices point into the parsed
// buffer.
type Packet struct {
	Src, Dst     netip.Addr
	Proto        uint8
	SPort, DPort uint16 // for ICMP echo: the identifier in SPort and DPort alike
	TCPFlags     uint8  // 0 unless the TCP header is there in full up to its flags
	Fragment     bool   // a non-first fragment: no transport header, and the fields below are zero
	Transport    []byte // the transport header and payload

	ICMPEcho, ICMPReply, ICMPError bool
	ICMPQuote                      []byte // the packet an ICMP error quotes
}

// Addrs reads the source and destination of an IPv4 or IPv6 packet without allocating; ok is false
// if pkt is too short or not IP.
func Addrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) < 1 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

// Parse reads an IPv4 or IPv6 packet's addresses, protocol and ports. It accepts packets cut after
// the first 4 transport bytes (as ICMP errors quote them); TCPFlags needs the TCP header up to its
// flags. ok is false for anything it cannot read: too short, not IP, a bad IPv4 header length, more
// than 7 IPv6 extension headers, TCP or UDP without ports, ICMP shorter than 8 bytes.
func Parse(pkt []byte) (p Packet, ok bool) {
	if len(pkt) < 1 {
		return p, false
	}
	var off int
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return p, false
		}
		off = int(pkt[0]&0x0f) * 4
		if off < 20 || off > len(pkt) {
			return p, false
		}
		p.Src, p.Dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		p.Proto = pkt[9]
		p.Fragment = binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0
	case 6:
		if len(pkt) < 40 {
			return p, false
		}
		p.Src, p.Dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		next, o, found := pkt[6], 40, false
	walk:
		for range maxNextHeaders {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(pkt) < o+2 {
					return p, false
				}
				next, o = pkt[o], o+(int(pkt[o+1])+1)*8
				continue
			case 44: // fragment
				if len(pkt) < o+8 {
					return p, false
				}
				p.Fragment = binary.BigEndian.Uint16(pkt[o+2:])>>3 != 0
				next, o = pkt[o], o+8
				continue
			}
			found = true
			break walk
		}
		if !found || o > len(pkt) {
			return p, false
		}
		p.Proto, off = next, o
	default:
		return p, false
	}
	if p.Fragment {
		return p, true
	}
	t := pkt[off:]
	p.Transport = t
	switch p.Proto {
	case ProtoTCP, ProtoUDP:
		if len(t) < 4 {
			return p, false
		}
		p.SPort, p.DPort = binary.BigEndian.Uint16(t[0:]), binary.BigEndian.Uint16(t[2:])
		if p.Proto == ProtoTCP && len(t) >= 14 {
			p.TCPFlags = t[13]
		}
	case ProtoICMP, ProtoICMPv6:
		if len(t) < 8 {
			return p, false
		}
		typ := t[0]
		if p.Proto == ProtoICMP {
			p.ICMPEcho, p.ICMPReply = typ == 8 || typ == 0, typ == 0
			p.ICMPError = typ == 3 || typ == 11 || typ == 12
		} else {
			p.ICMPEcho, p.ICMPReply = typ == 128 || typ == 129, typ == 129
			p.ICMPError = typ >= 1 && typ <= 4
		}
		if p.ICMPEcho {
			p.SPort = binary.BigEndian.Uint16(t[4:])
			p.DPort = p.SPort
		}
		if p.ICMPError {
			p.ICMPQuote = t[8:]
		}
	}
	return p, true
}

// TCPReset builds the RST that refuses TCP segment p (read from pkt), as RFC 9293 prescribes for a
// closed port, or returns nil if p is no whole TCP segment (a fragment, a header cut short), is to
// a multicast address, or is itself a RST. It allocates the answer.
func TCPReset(p *Packet, pkt []byte) []byte {
	if p.Proto != ProtoTCP || p.Fragment || len(p.Transport) < 20 || p.TCPFlags&TCPRST != 0 || p.Dst.IsMulticast() {
		return nil
	}
	t := p.Transport
	doff := int(t[12]>>4) * 4
	if doff < 20 || doff > len(t) {
		return nil
	}
	seq, ack := binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[8:])
	var rseq, rack uint32
	flags := byte(TCPRST)
	if p.TCPFlags&TCPACK != 0 {
		rseq = ack
	} else {
		segLen := uint32(len(t) - doff)
		if p.TCPFlags&TCPSYN != 0 {
			segLen++
		}
		if p.TCPFlags&TCPFIN != 0 {
			segLen++
		}
		rack = seq + segLen
		flags |= TCPACK
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], p.DPort)
	binary.BigEndian.PutUint16(tcp[2:], p.SPort)
	binary.BigEndian.PutUint32(tcp[4:], rseq)
	binary.BigEndian.PutUint32(tcp[8:], rack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return reverse(p, ProtoTCP, tcp, 16)
}

// UDPReply builds the UDP datagram that answers p (a UDP packet, not a fragment) with payload: from
// p's destination address and port to its source. nil if p is not such a packet or the reply would
// not fit in one IP packet.
func UDPReply(p *Packet, payload []byte) []byte {
	if p.Proto != ProtoUDP || p.Fragment || len(payload) > 65535-8-40 {
		return nil
	}
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], p.DPort)
	binary.BigEndian.PutUint16(udp[2:], p.SPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return reverse(p, ProtoUDP, append(udp, payload...), 6)
}

// reverse puts transport (whose checksum field is at csum and zero) in an IP header from p's
// destination to its source, and fills in the checksums.
func reverse(p *Packet, proto uint8, transport []byte, csum int) []byte {
	n := len(transport)
	var ip, pseudo []byte
	if p.Src.Is4() {
		ip = make([]byte, 20, 20+n)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+n))
		ip[8] = 64
		ip[9] = proto
		d, s := p.Dst.As4(), p.Src.As4()
		copy(ip[12:], d[:])
		copy(ip[16:], s[:])
		binary.BigEndian.PutUint16(ip[10:], ^Checksum(0, ip))
		pseudo = append(append(d[:], s[:]...), 0, proto, byte(n>>8), byte(n))
	} else {
		ip = make([]byte, 40, 40+n)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(n))
		ip[6] = proto
		ip[7] = 64
		d, s := p.Dst.As16(), p.Src.As16()
		copy(ip[8:], d[:])
		copy(ip[24:], s[:])
		pseudo = append(append(d[:], s[:]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
	}
	sum := ^Checksum(Checksum(0, pseudo), transport)
	if sum == 0 && proto == ProtoUDP {
		sum = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(transport[csum:], sum)
	return append(ip, transport...)
}

// Checksum adds b to the ones' complement sum sum (RFC 1071), folded to 16 bits. A header or
// pseudo-header plus segment whose checksum field is right sums to 0xffff.
func Checksum(sum uint16, b []byte) uint16 {
	// Eight bytes at a time into a 64-bit accumulator, carries folded back in: the ones' complement
	// sum of the big-endian 16-bit words is the same whatever the word size (RFC 1071, 2(B)).
	s, c := uint64(sum), uint64(0)
	for len(b) >= 16 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		b = b[16:]
	}
	if len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	s, c = bits.Add64(s, 0, c) // the carries out of bit 63, added back in
	s += c
	s = s>>32 + s&0xffffffff // below 2^33: the words below cannot overflow it
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// RaiseMSS sets the MSS option of TCP SYN p (read from pkt, which it changes in place) to mss if the
// option is there, 16-bit aligned, and smaller, and updates the checksum (RFC 1624); it reports
// whether it changed anything. Options it cannot read in full leave the segment as it was.
func RaiseMSS(p *Packet, mss uint16) bool {
	t := p.Transport
	if p.Proto != ProtoTCP || p.Fragment || p.TCPFlags&TCPSYN == 0 || len(t) < 20 {
		return false
	}
	doff := int(t[12]>>4) * 4
	if doff < 20 || doff > len(t) {
		return false
	}
	for i := 20; i < doff; {
		switch t[i] {
		case 0: // end of options
			return false
		case 1: // no-op
			i++
			continue
		}
		if i+1 >= doff || t[i+1] < 2 || i+int(t[i+1]) > doff {
			return false
		}
		if t[i] == 2 && t[i+1] == 4 {
			old := binary.BigEndian.Uint16(t[i+2:])
			if old >= mss || i%2 != 0 {
				return false
			}
			binary.BigEndian.PutUint16(t[i+2:], mss)
			sum := uint32(^binary.BigEndian.Uint16(t[16:])) + uint32(^old) + uint32(mss)
			for sum > 0xffff {
				sum = sum>>16 + sum&0xffff
			}
			binary.BigEndian.PutUint16(t[16:], ^uint16(sum))
			return true
		}
		i += int(t[i+1])
	}
	return false
}

// PureACK reports whether pkt is an unfragmented IPv4 packet, or an IPv6 packet without extension
// headers, that carries a TCP segment with no payload and no flag but ACK: a bare acknowledgement.
// The segment ends where pkt ends (a packet of this host's own stack, not one read off a wire
// with padding).
func PureACK(pkt []byte) bool {
	var tcp []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		if pkt[9] != ProtoTCP || ihl < 20 || len(pkt) < ihl+20 || pkt[6]&0x3f != 0 || pkt[7] != 0 {
			return false // not TCP, or a fragment (more fragments, or an offset)
		}
		tcp = pkt[ihl:]
	case len(pkt) >= 60 && pkt[0]>>4 == 6:
		if pkt[6] != ProtoTCP {
			return false
		}
		tcp = pkt[40:]
	default:
		return false
	}
	return len(tcp) == int(tcp[12]>>4)*4 && tcp[13] == TCPACK
}
