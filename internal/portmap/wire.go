package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ServerPort is the UDP port NAT-PMP and PCP servers listen on (RFC 6886, RFC 6887).
const ServerPort = 5351

// Protocol versions and opcodes on the wire.
const (
	pmpVersion    = 0
	pcpVersion    = 2
	pmpOpAddr     = 0 // NAT-PMP: external address request
	pmpOpMapUDP   = 1 // NAT-PMP: map a UDP port
	pcpOpMap      = 1 // PCP: MAP
	pcpResponseOp = 0x80
	protoUDP      = 17
)

// Message sizes: NAT-PMP's are fixed; a PCP MAP message is a 24-byte header and 36 bytes of MAP data,
// options may follow (we send none), and no PCP message exceeds 1100 bytes.
const (
	pmpAddrRequestLen  = 2
	pmpAddrResponseLen = 12
	pmpMapRequestLen   = 12
	pmpMapResponseLen  = 16
	pmpErrorLen        = 8 // an error response, e.g. Unsupported Version: version, opcode, result, epoch
	pcpMapLen          = 60
	pcpMaxLen          = 1100
)

// Result codes both protocols share in meaning at these numbers; resultUnsuppVersion is the one
// that makes a PCP client fall back to NAT-PMP.
const (
	resultSuccess       = 0
	resultUnsuppVersion = 1
)

// errUnsuppVersion: the server answered a PCP request with UNSUPP_VERSION (RFC 6887 section 9, or a
// NAT-PMP server's Unsupported Version, RFC 6886 section 3.5): it speaks NAT-PMP only.
var errUnsuppVersion = errors.New("server does not speak this protocol version")

// ResultError is a server's refusal: a non-zero result code.
type ResultError struct {
	Protocol string // ProtoPCP or ProtoNATPMP
	Code     uint16
}

func (e *ResultError) Error() string {
	return fmt.Sprintf("%s: server refused with result code %d (%s)", e.Protocol, e.Code, resultName(e.Protocol, e.Code))
}

func resultName(proto string, code uint16) string {
	pmp := []string{"success", "unsupported version", "not authorized or refused", "network failure", "out of resources", "unsupported opcode"}
	pcp := []string{"success", "unsupported version", "not authorized", "malformed request", "unsupported opcode", "unsupported option",
		"malformed option", "network failure", "no resources", "unsupported protocol", "user exceeded quota",
		"cannot provide external", "address mismatch", "excessive remote peers"}
	names := pmp
	if proto == ProtoPCP {
		names = pcp
	}
	if int(code) < len(names) {
		return names[code]
	}
	return "unknown"
}

// pmpAddrRequest is NAT-PMP's external address request.
func pmpAddrRequest() []byte { return []byte{pmpVersion, pmpOpAddr} }

// pmpMapRequest asks a NAT-PMP server to map the UDP port internal; lifetime 0 with external 0
// deletes the mapping.
func pmpMapRequest(internal, external uint16, lifetime uint32) []byte {
	b := make([]byte, pmpMapRequestLen)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:], internal)
	binary.BigEndian.PutUint16(b[6:], external)
	binary.BigEndian.PutUint32(b[8:], lifetime)
	return b
}

// pmpResponse is a decoded NAT-PMP response: to the address request (External set) or to a
// map request (the ports and Lifetime set).
type pmpResponse struct {
	Op       byte // the request's opcode
	Result   uint16
	Epoch    uint32
	External netip.Addr // address responses
	Internal uint16     // map responses
	Mapped   uint16
	Lifetime uint32
}

// decodePMP decodes a NAT-PMP response to a request with opcode op. A non-zero result code decodes
// (into Result) from a message of at least pmpErrorLen bytes; a success must have its opcode's exact
// length.
func decodePMP(b []byte, op byte) (pmpResponse, error) {
	if len(b) < pmpErrorLen {
		return pmpResponse{}, fmt.Errorf("nat-pmp: response of %d bytes, want at least %d", len(b), pmpErrorLen)
	}
	if b[0] != pmpVersion {
		return pmpResponse{}, fmt.Errorf("nat-pmp: response version %d, want %d", b[0], pmpVersion)
	}
	if b[1] != pcpResponseOp|op {
		return pmpResponse{}, fmt.Errorf("nat-pmp: response opcode %d, want %d", b[1], pcpResponseOp|op)
	}
	r := pmpResponse{Op: op, Result: binary.BigEndian.Uint16(b[2:]), Epoch: binary.BigEndian.Uint32(b[4:])}
	if r.Result != resultSuccess {
		return r, nil
	}
	switch op {
	case pmpOpAddr:
		if len(b) != pmpAddrResponseLen {
			return pmpResponse{}, fmt.Errorf("nat-pmp: address response of %d bytes, want %d", len(b), pmpAddrResponseLen)
		}
		r.External = netip.AddrFrom4([4]byte(b[8:12]))
	case pmpOpMapUDP:
		if len(b) != pmpMapResponseLen {
			return pmpResponse{}, fmt.Errorf("nat-pmp: map response of %d bytes, want %d", len(b), pmpMapResponseLen)
		}
		r.Internal = binary.BigEndian.Uint16(b[8:])
		r.Mapped = binary.BigEndian.Uint16(b[10:])
		r.Lifetime = binary.BigEndian.Uint32(b[12:])
	default:
		return pmpResponse{}, fmt.Errorf("nat-pmp: opcode %d", op)
	}
	return r, nil
}

// pcpMapRequest asks a PCP server to map the UDP port internal of client for lifetime (0 deletes),
// suggesting the external address and port of an earlier mapping (zero: any).
func pcpMapRequest(client netip.Addr, nonce [12]byte, internal uint16, external netip.AddrPort, lifetime uint32) []byte {
	b := make([]byte, pcpMapLen)
	b[0], b[1] = pcpVersion, pcpOpMap
	binary.BigEndian.PutUint32(b[4:], lifetime)
	c := client.As16()
	copy(b[8:24], c[:])
	copy(b[24:36], nonce[:])
	b[36] = protoUDP
	binary.BigEndian.PutUint16(b[40:], internal)
	binary.BigEndian.PutUint16(b[42:], external.Port())
	if external.Addr().IsValid() {
		e := external.Addr().As16()
		copy(b[44:60], e[:])
	} else { // "all zeros" for IPv4 is ::ffff:0.0.0.0 (RFC 6887 section 11.1)
		b[54], b[55] = 0xff, 0xff
	}
	return b
}

// pcpResponse is a decoded PCP MAP response.
type pcpResponse struct {
	Result   byte
	Lifetime uint32
	Epoch    uint32
	Nonce    [12]byte
	Internal uint16
	External netip.AddrPort
}

// decodePCP decodes a response to a PCP MAP request. An answer of a NAT-PMP-only server, or a PCP
// UNSUPP_VERSION, is errUnsuppVersion. Other non-zero result codes decode (into Result) from the
// header alone when the MAP data is missing; a success needs the MAP data of a UDP mapping.
func decodePCP(b []byte) (pcpResponse, error) {
	if len(b) >= 4 && b[0] == pmpVersion && binary.BigEndian.Uint16(b[2:]) == resultUnsuppVersion {
		return pcpResponse{}, errUnsuppVersion // a NAT-PMP server's Unsupported Version
	}
	if len(b) < 24 || len(b) > pcpMaxLen || len(b)%4 != 0 {
		return pcpResponse{}, fmt.Errorf("pcp: response of %d bytes, want 24 to %d, a multiple of 4", len(b), pcpMaxLen)
	}
	if b[1] != pcpResponseOp|pcpOpMap {
		return pcpResponse{}, fmt.Errorf("pcp: response opcode %#x, want %#x", b[1], pcpResponseOp|pcpOpMap)
	}
	r := pcpResponse{Result: b[3], Lifetime: binary.BigEndian.Uint32(b[4:]), Epoch: binary.BigEndian.Uint32(b[8:])}
	if r.Result == resultUnsuppVersion {
		return pcpResponse{}, errUnsuppVersion
	}
	if b[0] != pcpVersion {
		return pcpResponse{}, fmt.Errorf("pcp: response version %d, want %d", b[0], pcpVersion)
	}
	if len(b) < pcpMapLen {
		if r.Result != resultSuccess {
			return r, nil
		}
		return pcpResponse{}, fmt.Errorf("pcp: response of %d bytes without MAP data", len(b))
	}
	r.Nonce = [12]byte(b[24:36])
	if b[36] != protoUDP {
		return pcpResponse{}, fmt.Errorf("pcp: response for protocol %d, want UDP", b[36])
	}
	r.Internal = binary.BigEndian.Uint16(b[40:])
	r.External = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[44:60])).Unmap(), binary.BigEndian.Uint16(b[42:]))
	return r, nil
}

// seconds converts a lifetime for the wire, within 1 s and one day: the most any mapping asks for.
func seconds(d time.Duration) uint32 {
	return uint32(min(max(d, time.Second), 24*time.Hour) / time.Second)
}
