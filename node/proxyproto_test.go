package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// parseProxyV2 is a small decoder for the headers appendProxyV2 writes (TCP over IPv4 or IPv6).
func parseProxyV2(b []byte) (src, dst netip.AddrPort, n int, err error) {
	if len(b) < 16 || !bytes.Equal(b[:12], proxyV2Sig[:]) || b[12] != 0x21 {
		return src, dst, 0, errors.New("not a PROXY v2 header")
	}
	l := int(binary.BigEndian.Uint16(b[14:16]))
	if len(b) < 16+l {
		return src, dst, 0, errors.New("short header")
	}
	a := b[16 : 16+l]
	switch {
	case b[13] == 0x11 && l >= 12:
		src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case b[13] == 0x21 && l >= 36:
		src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34]))
		dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:36]))
	default:
		return src, dst, 0, errors.New("unsupported family")
	}
	return src, dst, 16 + l, nil
}

func TestProxyV2KnownBytes(t *testing.T) {
	got := appendProxyV2(nil, netip.MustParseAddrPort("100.64.0.2:51000"), netip.MustParseAddrPort("100.64.0.1:8080"))
	want := []byte{
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
		0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP over IPv4, 12 bytes
		100, 64, 0, 2, 100, 64, 0, 1, // src, dst
		0xC7, 0x38, 0x1F, 0x90, // 51000, 8080
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("header\n got %x\nwant %x", got, want)
	}
}

func TestProxyV2RoundTrip(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"100.64.0.2:1", "100.64.0.1:65535"},
		{"[fd7a::2]:4000", "[fd7a::1]:22"},
		{"100.64.0.2:5", "[fd7a::1]:22"}, // mixed: both as IPv6
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		b := appendProxyV2([]byte("x"), src, dst)[1:]
		gs, gd, n, err := parseProxyV2(append(b, "payload"...))
		if err != nil || n != len(b) {
			t.Fatalf("%v→%v: %v (n %d of %d)", src, dst, err, n, len(b))
		}
		if netip.AddrPortFrom(gs.Addr().Unmap(), gs.Port()) != src || netip.AddrPortFrom(gd.Addr().Unmap(), gd.Port()) != dst {
			t.Errorf("%v→%v: parsed %v→%v", src, dst, gs, gd)
		}
	}
}
