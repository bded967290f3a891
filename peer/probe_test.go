package peer

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/warren-net/warren/identity"
)

func probeKeys(t testing.TB) (*identity.Key, Key, Key) {
	t.Helper()
	a, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ka, _ := KeyOf(a.Public())
	kb, _ := KeyOf(b.Public())
	return a, ka, kb
}

func TestProbeSignatures(t *testing.T) {
	a, ka, kb := probeKeys(t)
	tx := txID{9, 8, 7}
	obs := netip.MustParseAddrPort("198.51.100.9:4242")
	for _, kind := range []byte{kindPing, kindPong} {
		b := appendProbe(nil, a, kind, ka, kb, tx, obs)
		p, err := parseProbe(b)
		if err != nil {
			t.Fatalf("kind %#x: %v", kind, err)
		}
		if p.from != ka || p.tx != tx || (kind == kindPong && p.observed != obs) {
			t.Fatalf("kind %#x parsed as %+v", kind, p)
		}
		if !p.verify(kb) {
			t.Fatalf("kind %#x: a valid probe does not verify", kind)
		}
		if p.verify(ka) {
			t.Errorf("kind %#x: a probe meant for b verifies for another node", kind)
		}
		for i := range b { // any flipped bit breaks it
			bad := bytes.Clone(b)
			bad[i] ^= 0x01
			if q, err := parseProbe(bad); err == nil && q.verify(kb) {
				t.Fatalf("kind %#x: flipping a bit of byte %d still verifies", kind, i)
			}
		}
	}
	if _, err := parseProbe(appendProbe(nil, a, kindPing, ka, kb, tx, obs)[:pingSize-1]); err == nil {
		t.Error("a short ping parsed")
	}
}

// FuzzParseProbe: no input makes the probe parser panic, and what parses has the exact size of its
// kind. (Signature checks are crypto/ed25519's, covered by TestProbeSignatures; running them on every
// input would make each exec slow enough that a short fuzz run spends its time on the baseline.)
func FuzzParseProbe(f *testing.F) {
	a, ka, kb := probeKeys(f)
	f.Add(appendProbe(nil, a, kindPing, ka, kb, txID{1}, netip.AddrPort{}))
	f.Add(appendProbe(nil, a, kindPong, ka, kb, txID{1}, netip.MustParseAddrPort("[2001:db8::1]:1")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProbe(b)
		if err != nil {
			return
		}
		if (p.kind == kindPing && len(b) != pingSize) || (p.kind == kindPong && len(b) != pongSize) || len(p.sig) != sigSize {
			t.Fatalf("parsed a %d-byte probe", len(b))
		}
	})
}

// TestPingPadded: a pong is never larger than the ping it answers, and a ping's padding is checked.
func TestPingPadded(t *testing.T) {
	id, _ := identity.Generate()
	from, _ := KeyOf(id.Public())
	to := Key{7}
	ping := appendProbe(nil, id, kindPing, from, to, txID{1}, netip.AddrPort{})
	pong := appendProbe(nil, id, kindPong, from, to, txID{1}, netip.MustParseAddrPort("[2001:db8::1]:65535"))
	if len(pong) > len(ping) {
		t.Fatalf("pong %d bytes > ping %d bytes", len(pong), len(ping))
	}
	p, err := parseProbe(ping)
	if err != nil || !p.verify(to) {
		t.Fatalf("padded ping: %v", err)
	}
	ping[len(ping)-1] = 1
	if _, err := parseProbe(ping); err == nil {
		t.Error("a ping with non-zero padding was accepted")
	}
	if _, err := parseProbe(ping[:len(ping)-pingPad]); err == nil {
		t.Error("an unpadded ping was accepted")
	}
}
