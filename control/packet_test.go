package control

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestRelayFrame(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	b := AppendRelay(nil, KindRelayTo, key, []byte("quic packet"))
	if !IsSideChannel(b) {
		t.Fatal("a relay frame must not look like QUIC")
	}
	kind, k, p, err := ParseRelay(b)
	if err != nil || kind != KindRelayTo || !bytes.Equal(k, key) || string(p) != "quic packet" {
		t.Fatalf("ParseRelay = %#x %x %q %v", kind, k, p, err)
	}
	for _, bad := range [][]byte{nil, {KindRelayTo}, b[:RelayHeaderSize], append([]byte{0x40}, b[1:]...),
		AppendRelay(nil, KindRelayFrom, key, make([]byte, MaxRelayPayload+1))} {
		if _, _, _, err := ParseRelay(bad); err == nil {
			t.Errorf("ParseRelay(%d bytes starting %x) accepted a bad frame", len(bad), bad[:min(len(bad), 1)])
		}
	}
}

func TestBinding(t *testing.T) {
	tx := [TxIDSize]byte{1, 2, 3}
	req := AppendBindingRequest(nil, tx)
	if len(req) != BindingSize || !IsSideChannel(req) {
		t.Fatalf("request: %d bytes, side channel %v", len(req), IsSideChannel(req))
	}
	if got, err := ParseBindingRequest(req); err != nil || got != tx {
		t.Fatalf("ParseBindingRequest = %x, %v", got, err)
	}
	for _, obs := range []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:40001"), netip.MustParseAddrPort("[2001:db8::1]:7400")} {
		resp := AppendBindingResponse(nil, tx, obs)
		if len(resp) > len(req) {
			t.Fatalf("response (%d bytes) larger than the request (%d): an amplifier", len(resp), len(req))
		}
		gtx, gobs, err := ParseBindingResponse(resp)
		if err != nil || gtx != tx || gobs != obs {
			t.Fatalf("ParseBindingResponse = %x %v %v, want %v", gtx, gobs, err, obs)
		}
	}
	if _, err := ParseBindingRequest(req[:20]); err == nil {
		t.Error("short request accepted")
	}
}

// FuzzSideChannel: no side-channel input makes a parser panic, and what parses re-encodes the same.
func FuzzSideChannel(f *testing.F) {
	f.Add(AppendRelay(nil, KindRelayTo, make([]byte, 32), []byte("x")))
	f.Add(AppendBindingRequest(nil, [TxIDSize]byte{1}))
	f.Add(AppendBindingResponse(nil, [TxIDSize]byte{1}, netip.MustParseAddrPort("127.0.0.1:9")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if kind, key, p, err := ParseRelay(b); err == nil {
			if !bytes.Equal(AppendRelay(nil, kind, key, p), b) {
				t.Fatal("relay frame does not round-trip")
			}
		}
		if tx, err := ParseBindingRequest(b); err == nil && tx != [TxIDSize]byte(b[1:1+TxIDSize]) {
			t.Fatal("binding request tx mismatch")
		}
		if tx, obs, err := ParseBindingResponse(b); err == nil {
			if got := AppendBindingResponse(nil, tx, obs); len(got) != BindingSize {
				t.Fatal("binding response size")
			}
		}
	})
}
