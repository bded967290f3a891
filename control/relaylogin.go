package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// # Standalone relay login
//
// A standalone relay (warren-coord relay) has no membership data, so nodes tell it whom they consent
// to exchange relayed packets with. A node opens a QUIC connection to the relay from its one UDP
// socket (ALPN "warren-relay/1", mutual TLS with both identity keys: the handshake proves the node's key
// from that address), opens one bidirectional stream and sends consent lists on it:
//
//	node  → relay  [length 4, big endian][length/32 keys of 32 bytes]   (the first one is the login)
//	relay → node   [RelayLoginOK]                                        (once, after the first list)
//
// Each list replaces the previous one: the keys of the peers the node wants to reach, and be reached
// by, through the relay. The relay forwards a relay frame (packet.go) only between two logged-in nodes
// that name each other. A list holds at most MaxRelayConsent keys; anything larger, or a length that is
// not a whole number of keys, is a protocol error and the relay closes the connection.
//
// A relay that refuses a login, or ends one, closes the connection with one of the RelayClose codes
// and a reason phrase for the node's user (QUIC's CONNECTION_CLOSE carries both).

// RelayALPN is the TLS application protocol of a node's login connection to a standalone relay.
const RelayALPN = "warren-relay/1"

// MaxRelayConsent bounds the keys in one consent list: a node's whole peer map.
const MaxRelayConsent = MaxPeers

// RelayLoginOK is the byte a relay sends after accepting a node's first consent list.
const RelayLoginOK byte = 1

// Application error codes of a relay login connection's close.
const (
	RelayCloseOK          = 0 // the node or the relay is going away
	RelayCloseProtocol    = 1 // a malformed login or consent list
	RelayCloseFull        = 2 // the relay, or the node's source range, has all the nodes it takes
	RelayCloseReplaced    = 3 // the same key logged in again, from elsewhere
	RelayCloseBlocked     = 4 // the node's address is in the relay's block list
	RelayCloseRateLimited = 5 // too many logins from the node's address or with its key
)

// MaxRelays bounds the standalone relays a Welcome announces.
const MaxRelays = 8

// Relay describes a standalone relay the coord announces in Welcome.
type Relay struct {
	Addr netip.AddrPort `json:"addr"` // the relay's UDP address
	Key  string         `json:"key"`  // its identity key fingerprint ("SHA256:..."), pinned by nodes
}

// ErrConsentTooLarge is returned for a consent list over MaxRelayConsent keys.
var ErrConsentTooLarge = errors.New("relay consent list too large")

// AppendRelayConsent appends a consent list frame holding keys (32 bytes each) to b. It fails if a key
// has the wrong length or there are more than MaxRelayConsent.
func AppendRelayConsent(b []byte, keys [][]byte) ([]byte, error) {
	if len(keys) > MaxRelayConsent {
		return b, fmt.Errorf("%w: %d keys > %d", ErrConsentTooLarge, len(keys), MaxRelayConsent)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(32*len(keys)))
	for _, k := range keys {
		if len(k) != 32 {
			return b, fmt.Errorf("relay consent: key of %d bytes, want 32", len(k))
		}
		b = append(b, k...)
	}
	return b, nil
}

// ReadRelayConsent reads one consent list frame from r. It reads the length first and refuses a list
// over MaxRelayConsent keys before allocating anything for it.
func ReadRelayConsent(r io.Reader) ([][32]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if err := checkConsentLen(n); err != nil {
		return nil, err
	}
	var body bytes.Buffer // grows with what arrives: a stalled sender holds no more than it sent
	if got, err := io.CopyN(&body, r, int64(n)); err != nil || got != int64(n) {
		return nil, fmt.Errorf("read relay consent list: %w", io.ErrUnexpectedEOF)
	}
	return ParseRelayConsent(body.Bytes())
}

// ParseRelayConsent parses the body of a consent list frame (without its length prefix).
func ParseRelayConsent(body []byte) ([][32]byte, error) {
	if err := checkConsentLen(uint64(len(body))); err != nil {
		return nil, err
	}
	keys := make([][32]byte, len(body)/32)
	for i := range keys {
		keys[i] = [32]byte(body[32*i:])
	}
	return keys, nil
}

func checkConsentLen[T uint32 | uint64](n T) error {
	if n > 32*MaxRelayConsent {
		return fmt.Errorf("%w: %d bytes", ErrConsentTooLarge, n)
	}
	if n%32 != 0 {
		return fmt.Errorf("relay consent list of %d bytes: not a whole number of 32-byte keys", n)
	}
	return nil
}

func checkRelays(rs []Relay) error {
	if len(rs) > MaxRelays {
		return fmt.Errorf("welcome: too many relays (%d > %d)", len(rs), MaxRelays)
	}
	for _, r := range rs {
		if !r.Addr.IsValid() || r.Addr.Port() == 0 {
			return fmt.Errorf("welcome: invalid relay address %v", r.Addr)
		}
		if !strings.HasPrefix(r.Key, "SHA256:") || len(r.Key) != len("SHA256:")+43 {
			return fmt.Errorf("welcome: relay key %.60q is not a SHA256 fingerprint", r.Key)
		}
	}
	return nil
}
