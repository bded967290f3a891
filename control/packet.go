package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// # UDP side channel
//
// Besides QUIC, the node's one UDP socket and the coord's carry small non-QUIC packets. Their first
// byte has the two high bits clear, which no QUIC packet has, so quic-go hands them to the program
// (quic.Transport.ReadNonQUICPacket). The first byte names the kind:
//
//	0x21 relay to     node  → relay  [kind][destination key 32][end-to-end QUIC packet]
//	0x22 relay from   relay → node   [kind][source key 32][end-to-end QUIC packet]
//	0x31 binding req  node  → coord  [kind][txid 12][zero padding to BindingSize]
//	0x32 binding resp coord → node   [kind][txid 12][family 1][address 16][port 2][zero padding]
//
// Relay frames carry QUIC packets between two peers' own QUIC connection: the relay (the coord, or a
// standalone relay, relaylogin.go) sees ciphertext and the keys, never the contents. It attributes a
// frame to the node whose authenticated connection (control or relay login) comes from the same
// address, and forwards only between nodes that consent to each other: that share a network, for the
// coord; that name each other, for a standalone relay. A standalone relay answers binding requests too. A binding request asks
// the coord which address it came from (NAT discovery, like a STUN binding); the answer is never
// larger than the request, so the coord cannot be used to amplify traffic. Peer path probes (kinds
// 0x11 and 0x12) are defined by package peer; they never reach the coord.

// Side-channel packet kinds.
const (
	KindRelayTo     byte = 0x21
	KindRelayFrom   byte = 0x22
	KindBindingReq  byte = 0x31
	KindBindingResp byte = 0x32
)

// RelayHeaderSize is the relay framing's overhead: a kind byte and a 32-byte key.
const RelayHeaderSize = 1 + 32

// MaxRelayPayload bounds the QUIC packet in one relay frame.
const MaxRelayPayload = 1452

// BindingSize is the size of binding requests and responses.
const BindingSize = 48

// TxIDSize is the size of a binding transaction ID.
const TxIDSize = 12

// IsSideChannel reports whether a UDP payload is a side-channel packet rather than QUIC.
func IsSideChannel(b []byte) bool { return len(b) > 0 && b[0]&0xc0 == 0 }

// AppendRelay appends a relay frame of the given kind for key around payload.
func AppendRelay(b []byte, kind byte, key []byte, payload []byte) []byte {
	b = append(b, kind)
	b = append(b, key[:32]...)
	return append(b, payload...)
}

// ParseRelay splits a relay frame into its kind, key and payload (which alias b).
func ParseRelay(b []byte) (kind byte, key []byte, payload []byte, err error) {
	if len(b) < RelayHeaderSize+1 {
		return 0, nil, nil, fmt.Errorf("relay frame too short (%d bytes)", len(b))
	}
	if b[0] != KindRelayTo && b[0] != KindRelayFrom {
		return 0, nil, nil, fmt.Errorf("not a relay frame (kind %#x)", b[0])
	}
	if len(b)-RelayHeaderSize > MaxRelayPayload {
		return 0, nil, nil, fmt.Errorf("relay payload too large (%d > %d bytes)", len(b)-RelayHeaderSize, MaxRelayPayload)
	}
	return b[0], b[1:RelayHeaderSize], b[RelayHeaderSize:], nil
}

// AppendBindingRequest appends a binding request with the given transaction ID.
func AppendBindingRequest(b []byte, tx [TxIDSize]byte) []byte {
	start := len(b)
	b = append(b, KindBindingReq)
	b = append(b, tx[:]...)
	return append(b, make([]byte, BindingSize-(len(b)-start))...)
}

// AppendBindingResponse appends the answer to request tx: the address the request came from.
func AppendBindingResponse(b []byte, tx [TxIDSize]byte, observed netip.AddrPort) []byte {
	start := len(b)
	b = append(b, KindBindingResp)
	b = append(b, tx[:]...)
	fam := byte(4)
	if !observed.Addr().Unmap().Is4() {
		fam = 6
	}
	ip := observed.Addr().As16()
	b = append(b, fam)
	b = append(b, ip[:]...)
	b = binary.BigEndian.AppendUint16(b, observed.Port())
	return append(b, make([]byte, BindingSize-(len(b)-start))...)
}

// ErrNotBinding is returned for packets that are not binding messages of the expected kind.
var ErrNotBinding = errors.New("not a binding message")

// ParseBindingRequest returns the transaction ID of a binding request.
func ParseBindingRequest(b []byte) (tx [TxIDSize]byte, err error) {
	if len(b) != BindingSize || b[0] != KindBindingReq {
		return tx, ErrNotBinding
	}
	copy(tx[:], b[1:])
	return tx, nil
}

// ParseBindingResponse returns the transaction ID and observed address of a binding response.
func ParseBindingResponse(b []byte) (tx [TxIDSize]byte, observed netip.AddrPort, err error) {
	if len(b) != BindingSize || b[0] != KindBindingResp {
		return tx, observed, ErrNotBinding
	}
	copy(tx[:], b[1:])
	p := b[1+TxIDSize:]
	ip := netip.AddrFrom16([16]byte(p[1:17]))
	switch p[0] {
	case 4:
		if !ip.Is4In6() {
			return tx, observed, fmt.Errorf("binding response: IPv4 family with address %s", ip)
		}
		ip = ip.Unmap()
	case 6:
	default:
		return tx, observed, fmt.Errorf("binding response: unknown address family %d", p[0])
	}
	port := binary.BigEndian.Uint16(p[17:19])
	if port == 0 {
		return tx, observed, errors.New("binding response: port 0")
	}
	return tx, netip.AddrPortFrom(ip, port), nil
}
