package node

import (
	"context"
	"net/netip"
	"testing"
)

// TestResolveUDPDefaultPort: an address without a port means warren-coord's default port, 7400.
func TestResolveUDPDefaultPort(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"127.0.0.1", "127.0.0.1:7400"},
		{"[::1]", "[::1]:7400"},
		{"::1", "[::1]:7400"},
		{"localhost:9000", "127.0.0.1:9000"},
		{"localhost", "127.0.0.1:7400"},
	} {
		got, err := resolveUDP(context.Background(), tc.in)
		if err != nil {
			t.Errorf("resolveUDP(%q): %v", tc.in, err)
			continue
		}
		if tc.in == "localhost" || tc.in == "localhost:9000" {
			// localhost may resolve to ::1 first; only the port is the point here.
			if want := netip.MustParseAddrPort(tc.want); got.Port() != want.Port() || !got.Addr().IsLoopback() {
				t.Errorf("resolveUDP(%q) = %v, want a loopback address with port %d", tc.in, got, want.Port())
			}
			continue
		}
		if got.String() != tc.want {
			t.Errorf("resolveUDP(%q) = %v, want %s", tc.in, got, tc.want)
		}
	}
	if _, err := resolveUDP(context.Background(), "[::1"); err == nil {
		t.Error("resolveUDP(\"[::1\") succeeded, want an error")
	}
}
