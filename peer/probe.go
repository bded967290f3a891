package peer

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/warren-net/warren/identity"
)

// Path probes are side-channel packets (see package control) between two nodes' UDP sockets:
//
//	0x11 ping  [kind][sender key 32][txid 12][signature 64][zero padding 19]
//	0x12 pong  [kind][sender key 32][txid 12][family 1][address 16][port 2][signature 64]
//
// The signature is the sender's Ed25519 signature over probeContext, the kind, the sender's key, the
// receiver's key, the txid and (pong) the address the ping came from. So a probe cannot be forged, a
// probe meant for one node is worthless to another, and a pong answers exactly one ping: a node accepts
// a pong only for a txid it sent to that very address, so a replayed pong validates nothing. A replayed
// ping only makes the receiver send one pong (same size: pings are padded to it; rate limited),
// which reveals nothing.
// Signatures instead of encryption: probes carry nothing secret, and Ed25519 keys are what nodes have.

// Probe kinds.
const (
	kindPing byte = 0x11
	kindPong byte = 0x12
)

const (
	txSize       = 12
	addrSize     = 1 + 16 + 2
	sigSize      = ed25519.SignatureSize
	pongSize     = 1 + identity.KeySize + txSize + addrSize + sigSize
	pingSize     = pongSize // padded, so that a pong is never larger than the ping it answers
	pingPad      = pongSize - (1 + identity.KeySize + txSize + sigSize)
	probeContext = "warren path probe v1\x00"
)

type txID [txSize]byte

// probe is a parsed ping or pong. Observed is set for pongs.
type probe struct {
	kind     byte
	from     Key
	tx       txID
	observed netip.AddrPort
	sig      []byte
}

var errNotProbe = errors.New("not a path probe")

// parseProbe parses a ping or pong without checking its signature.
func parseProbe(b []byte) (probe, error) {
	var p probe
	if len(b) == 0 || (b[0] != kindPing && b[0] != kindPong) {
		return p, errNotProbe
	}
	if len(b) != pongSize { // = pingSize
		return p, fmt.Errorf("path probe kind %#x: %d bytes, want %d", b[0], len(b), pongSize)
	}
	if b[0] == kindPing {
		pad := b[len(b)-pingPad:]
		if !bytes.Equal(pad, make([]byte, pingPad)) {
			return p, errors.New("path probe: ping padding not zero")
		}
		b = b[:len(b)-pingPad]
	}
	p.kind = b[0]
	copy(p.from[:], b[1:])
	copy(p.tx[:], b[1+identity.KeySize:])
	rest := b[1+identity.KeySize+txSize:]
	if p.kind == kindPong {
		a, err := parseAddr(rest[:addrSize])
		if err != nil {
			return p, err
		}
		p.observed = a
		rest = rest[addrSize:]
	}
	p.sig = rest
	return p, nil
}

func appendAddr(b []byte, a netip.AddrPort) []byte {
	fam := byte(6)
	if a.Addr().Unmap().Is4() {
		fam = 4
	}
	ip := a.Addr().As16()
	b = append(b, fam)
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func parseAddr(b []byte) (netip.AddrPort, error) {
	ip := netip.AddrFrom16([16]byte(b[1:17]))
	switch b[0] {
	case 4:
		if !ip.Is4In6() {
			return netip.AddrPort{}, errors.New("path probe: bad IPv4 address")
		}
		ip = ip.Unmap()
	case 6:
	default:
		return netip.AddrPort{}, fmt.Errorf("path probe: unknown address family %d", b[0])
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[17:19])), nil
}

// signedPart is what the signature covers.
func signedPart(buf []byte, kind byte, from, to Key, tx txID, observed netip.AddrPort) []byte {
	buf = append(buf, probeContext...)
	buf = append(buf, kind)
	buf = append(buf, from[:]...)
	buf = append(buf, to[:]...)
	buf = append(buf, tx[:]...)
	if kind == kindPong {
		buf = appendAddr(buf, observed)
	}
	return buf
}

// appendProbe appends a signed ping (observed ignored) or pong from key to peer to.
func appendProbe(b []byte, key *identity.Key, kind byte, from, to Key, tx txID, observed netip.AddrPort) []byte {
	var scratch [128]byte
	sig := key.Sign(signedPart(scratch[:0], kind, from, to, tx, observed))
	b = append(b, kind)
	b = append(b, from[:]...)
	b = append(b, tx[:]...)
	if kind == kindPong {
		b = appendAddr(b, observed)
	}
	b = append(b, sig...)
	if kind == kindPing {
		b = append(b, make([]byte, pingPad)...)
	}
	return b
}

// verify checks p's signature as a probe addressed to us.
func (p *probe) verify(to Key) bool {
	var scratch [128]byte
	return ed25519.Verify(p.from[:], signedPart(scratch[:0], p.kind, p.from, to, p.tx, p.observed), p.sig)
}
