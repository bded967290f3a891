package main

import (
	"strings"
	"testing"
)

func TestCoordTarget(t *testing.T) {
	const fp = "SHA256:6yW1x1Qn1u0yXW1m0lVQ0cD7o3y3cQ3zmt1PZ0r4b0Y"
	const other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	for _, tc := range []struct {
		coord, key       string
		addr, pin, error string
	}{
		{coord: "coord.example:7400", addr: "coord.example:7400"},
		{coord: "coord.example:7400#" + fp, addr: "coord.example:7400", pin: fp},
		{coord: "[::1]:7400#" + fp, addr: "[::1]:7400", pin: fp},
		{coord: "coord.example:7400", key: fp, addr: "coord.example:7400", pin: fp},
		{coord: "coord.example:7400#" + fp, key: fp, addr: "coord.example:7400", pin: fp},
		{coord: "coord.example:7400#" + fp, key: other, error: "--coord-key says"},
		{coord: "coord.example:7400#SHA256:short", error: "invalid key fingerprint"},
		{coord: "coord.example:7400", key: "nonsense", error: "--coord-key"},
		// No port: the default one, 7400.
		{coord: "coord.example", addr: "coord.example:7400"},
		{coord: "coord.example#" + fp, addr: "coord.example:7400", pin: fp},
		{coord: "192.0.2.1", addr: "192.0.2.1:7400"},
		{coord: "[::1]", addr: "[::1]:7400"},
		{coord: "[::1]#" + fp, addr: "[::1]:7400", pin: fp},
		{coord: "::1", addr: "[::1]:7400"},
		{coord: "coord.example:9000", addr: "coord.example:9000"},
		// Several servers sharing one database and key, tried in order.
		{coord: "a.example,b.example:9000", addr: "a.example:7400,b.example:9000"},
		{coord: "a.example, [::1]#" + fp, addr: "a.example:7400,[::1]:7400", pin: fp},
		{coord: "a.example#" + fp + ",b.example#" + fp, addr: "a.example:7400,b.example:7400", pin: fp},
		{coord: "a.example#" + fp + ",b.example#" + other, error: "share one key"},
		{coord: "a.example,,b.example", error: "an empty address"},
		{coord: "a.example,b.example#" + fp, key: other, error: "--coord-key says"},
	} {
		addr, pin, err := coordTarget(tc.coord, tc.key)
		if tc.error != "" {
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("%q %q: got %v, want an error containing %q", tc.coord, tc.key, err, tc.error)
			}
			continue
		}
		if err != nil || addr != tc.addr || pin != tc.pin {
			t.Errorf("%q %q: got %q %q %v, want %q %q", tc.coord, tc.key, addr, pin, err, tc.addr, tc.pin)
		}
	}
}
