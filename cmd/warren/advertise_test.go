package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestParseAdvertise: --advertise takes literal public IP:PORT addresses, comma-separated or
// repeated, and refuses host names, missing ports and addresses no peer can reach.
func TestParseAdvertise(t *testing.T) {
	var l listFlag
	l.Set("203.0.113.5:41641, [2001:db8::1]:41641")
	l.Set("[::ffff:198.51.100.7]:9")
	got, err := parseAdvertise(l)
	want := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:41641"), netip.MustParseAddrPort("[2001:db8::1]:41641"),
		netip.MustParseAddrPort("198.51.100.7:9")}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"example.net:41641", "203.0.113.5", "203.0.113.5:0", "203.0.113.5:70000", "127.0.0.1:41641",
		"[::1]:41641", "0.0.0.0:41641", "[::]:41641", "224.0.0.1:41641", "169.254.1.1:41641", "[fe80::1%eth0]:41641",
		"255.255.255.255:41641", "[::ffff:127.0.0.1]:41641"} {
		if _, err := parseAdvertise([]string{bad}); err == nil || !strings.Contains(err.Error(), "--advertise") {
			t.Errorf("%q: %v, want an --advertise error", bad, err)
		}
	}
	if _, err := parseAdvertise(slices.Repeat([]string{"203.0.113.5:1"}, 9)); err == nil {
		t.Error("nine addresses accepted")
	}
}
