package portmap

import (
	"net/netip"
	"testing"
)

// TestDecodeStrict: wrong sizes, versions and opcodes do not decode.
func TestDecodeStrict(t *testing.T) {
	addr := pmpResponseBytes(pmpOpAddr, resultSuccess, []byte{203, 0, 113, 5})
	if r, err := decodePMP(addr, pmpOpAddr); err != nil || r.External != fakeExternal {
		t.Errorf("address response: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{"short": addr[:11], "long": append(addr, 0), "tiny": addr[:7]} {
		if _, err := decodePMP(b, pmpOpAddr); err == nil {
			t.Errorf("%s address response decoded", name)
		}
	}
	if _, err := decodePMP(addr, pmpOpMapUDP); err == nil {
		t.Error("an address response decoded as a map response")
	}
	var nonce [12]byte
	ok := pcpResponseBytes(resultSuccess, 60, nonce, 1, netip.MustParseAddrPort("203.0.113.5:2"))
	if r, err := decodePCP(ok); err != nil || r.External != netip.MustParseAddrPort("203.0.113.5:2") || r.Lifetime != 60 {
		t.Errorf("PCP response: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{"short": ok[:56], "odd": append(ok, 0), "header only": ok[:24],
		"huge": make([]byte, 1104)} {
		if _, err := decodePCP(b); err == nil {
			t.Errorf("%s PCP response decoded", name)
		}
	}
	tcp := append([]byte(nil), ok...)
	tcp[36] = 6
	if _, err := decodePCP(tcp); err == nil {
		t.Error("a TCP mapping decoded")
	}
	if _, err := decodePCP(pmpResponseBytes(pcpOpMap, resultUnsuppVersion, nil)); err != errUnsuppVersion {
		t.Errorf("NAT-PMP's Unsupported Version: %v", err)
	}
}

func FuzzDecodePMP(f *testing.F) {
	f.Add(pmpResponseBytes(pmpOpAddr, resultSuccess, []byte{203, 0, 113, 5}), byte(0))
	f.Add(pmpResponseBytes(pmpOpMapUDP, resultSuccess, []byte{0, 1, 0, 2, 0, 0, 0, 60}), byte(1))
	f.Add(pmpResponseBytes(pmpOpMapUDP, 3, nil), byte(1))
	f.Fuzz(func(t *testing.T, b []byte, op byte) {
		r, err := decodePMP(b, op)
		if err != nil {
			return
		}
		if len(b) < pmpErrorLen || r.Op != op || (r.Result == resultSuccess && op == pmpOpAddr && (len(b) != pmpAddrResponseLen || !r.External.Is4())) ||
			(r.Result == resultSuccess && op == pmpOpMapUDP && len(b) != pmpMapResponseLen) || (r.Result == resultSuccess && op > pmpOpMapUDP) {
			t.Errorf("decoded %x (op %d) as %+v", b, op, r)
		}
	})
}

func FuzzDecodePCP(f *testing.F) {
	var nonce [12]byte
	f.Add(pcpResponseBytes(resultSuccess, 60, nonce, 1, netip.MustParseAddrPort("203.0.113.5:2")))
	f.Add(pcpResponseBytes(2, 0, nonce, 1, netip.AddrPort{})[:24])
	f.Add(pmpResponseBytes(pcpOpMap, resultUnsuppVersion, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCP(b)
		if err != nil {
			return
		}
		if len(b) < 24 || len(b) > pcpMaxLen || len(b)%4 != 0 || (r.Result == resultSuccess && (len(b) < pcpMapLen || b[36] != protoUDP)) {
			t.Errorf("decoded %x as %+v", b, r)
		}
	})
}
