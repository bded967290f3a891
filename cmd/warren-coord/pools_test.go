package main

import (
	"strings"
	"testing"
	"time"
)

// --pool4 1.1.1.0/24 would hand out public addresses as overlay addresses; nodes refuse that, so the
// server refuses to start with it.
func TestParsePoolsOverlayRanges(t *testing.T) {
	for _, tc := range []struct {
		v4, v6, want string // want "" = accepted
	}{
		{"100.64.0.0/10", "fd7a:7761:7272::/48", ""},
		{"100.100.0.0/16", "fd00:1::/64", ""},
		{"1.1.1.0/24", "fd7a:7761:7272::/48", "--pool4 1.1.1.0/24: must lie inside 100.64.0.0/10"},
		{"10.0.0.0/8", "fd7a:7761:7272::/48", "--pool4 10.0.0.0/8: must lie inside"},
		{"100.0.0.0/8", "fd7a:7761:7272::/48", "--pool4 100.0.0.0/8: must lie inside"},
		{"100.64.0.0/10", "2001:db8::/32", "--pool6 2001:db8::/32: must lie inside fc00::/7"},
	} {
		_, err := parsePools(tc.v4, tc.v6)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s: refused: %v", tc.v4, tc.v6, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %s: got %v, want %q", tc.v4, tc.v6, err, tc.want)
		}
	}
}

func TestParseQuarantine(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"7d", 7 * 24 * time.Hour, true}, {"72h", 72 * time.Hour, true}, {"0", 0, true}, {"0s", 0, true}, {"0d", 0, true},
		{"", 0, false}, {"-1h", 0, false}, {"soon", 0, false}, {"10", 0, false},
	} {
		got, err := parseQuarantine(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseQuarantine(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}
