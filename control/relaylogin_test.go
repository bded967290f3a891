package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestRelayConsentRoundTrip(t *testing.T) {
	keys := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	b, err := AppendRelayConsent(nil, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4+64 {
		t.Fatalf("frame of %d bytes, want 68", len(b))
	}
	r := bytes.NewReader(append(b, b[:4+32]...)) // a whole frame, then a truncated one
	got, err := ReadRelayConsent(r)
	if err != nil || len(got) != 2 || got[0][0] != 1 || got[1][31] != 2 {
		t.Fatalf("read %v, %v", got, err)
	}
	if _, err := ReadRelayConsent(bytes.NewReader(b[:4+33])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v, want unexpected EOF", err)
	}
	empty, _ := AppendRelayConsent(nil, nil)
	if got, err := ReadRelayConsent(bytes.NewReader(empty)); err != nil || len(got) != 0 {
		t.Errorf("empty list: %v, %v", got, err)
	}
}

func TestRelayConsentLimits(t *testing.T) {
	// A length over the limit is refused before anything is allocated or read.
	hdr := binary.BigEndian.AppendUint32(nil, 32*(MaxRelayConsent+1))
	if _, err := ReadRelayConsent(&failAfter{b: hdr}); !errors.Is(err, ErrConsentTooLarge) {
		t.Errorf("oversized length: %v, want ErrConsentTooLarge", err)
	}
	hdr = binary.BigEndian.AppendUint32(nil, 0xffffffff)
	if _, err := ReadRelayConsent(&failAfter{b: hdr}); !errors.Is(err, ErrConsentTooLarge) {
		t.Errorf("length 2^32-1: %v, want ErrConsentTooLarge", err)
	}
	if _, err := ParseRelayConsent(make([]byte, 33)); err == nil {
		t.Error("33-byte body parsed: want a whole number of keys")
	}
	if _, err := AppendRelayConsent(nil, make([][]byte, MaxRelayConsent+1)); !errors.Is(err, ErrConsentTooLarge) {
		t.Errorf("encoding too many keys: %v", err)
	}
	if _, err := AppendRelayConsent(nil, [][]byte{make([]byte, 31)}); err == nil {
		t.Error("encoded a 31-byte key")
	}
	full := make([][]byte, MaxRelayConsent)
	for i := range full {
		full[i] = make([]byte, 32)
	}
	b, err := AppendRelayConsent(nil, full)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ReadRelayConsent(bytes.NewReader(b)); err != nil || len(got) != MaxRelayConsent {
		t.Errorf("a list of exactly MaxRelayConsent keys: %d, %v", len(got), err)
	}
}

// failAfter yields b, then fails the test's expectations by returning an error no caller expects.
type failAfter struct{ b []byte }

func (f *failAfter) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, errors.New("read past the header: the length should have been refused first")
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func TestWelcomeRelays(t *testing.T) {
	w := func(rs ...Relay) *Msg {
		return &Msg{Type: TypeWelcome, Welcome: &Welcome{IPv4: netip.MustParseAddr("100.64.0.1"), IPv6: netip.MustParseAddr("fd7a::1"),
			Prefix4: netip.MustParsePrefix("100.64.0.0/10"), Prefix6: netip.MustParsePrefix("fd7a::/48"), Networks: []string{}, Relays: rs}}
	}
	good := Relay{Addr: netip.MustParseAddrPort("192.0.2.1:7401"), Key: "SHA256:" + strings.Repeat("A", 43)}
	if err := w(good).Validate(); err != nil {
		t.Errorf("valid relay refused: %v", err)
	}
	many := make([]Relay, MaxRelays+1)
	for i := range many {
		many[i] = good
	}
	for name, m := range map[string]*Msg{
		"no port":   w(Relay{Addr: netip.MustParseAddrPort("192.0.2.1:0"), Key: good.Key}),
		"bad key":   w(Relay{Addr: good.Addr, Key: "SHA256:short"}),
		"no prefix": w(Relay{Addr: good.Addr, Key: strings.Repeat("A", 50)}),
		"too many":  w(many...),
		"zero addr": w(Relay{Key: good.Key}),
	} {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzRelayConsent: no input makes the consent reader panic or allocate past its limit, and what parses
// re-encodes to the same bytes.
func FuzzRelayConsent(f *testing.F) {
	one, _ := AppendRelayConsent(nil, [][]byte{bytes.Repeat([]byte{7}, 32)})
	f.Add(one)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 33, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ReadRelayConsent(bytes.NewReader(b))
		if err != nil {
			return
		}
		raw := make([][]byte, len(keys))
		for i := range keys {
			raw[i] = keys[i][:]
		}
		out, err := AppendRelayConsent(nil, raw)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(out, b[:len(out)]) {
			t.Fatalf("re-encoded %x, read from %x", out, b)
		}
	})
}
