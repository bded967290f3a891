package main

import (
	"strings"
	"testing"
)

func TestRelayFlag(t *testing.T) {
	fp := "SHA256:" + strings.Repeat("a", 43)
	var r relayFlags
	for _, v := range []string{"127.0.0.1:7401=" + fp, "[::1]:7402=" + strings.TrimPrefix(fp, "SHA256:")} {
		if err := r.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if len(r) != 2 || r[0].Addr.String() != "127.0.0.1:7401" || r[1].Addr.String() != "[::1]:7402" || r[1].Key != fp {
		t.Fatalf("relays = %+v", r)
	}
	for _, bad := range []string{
		"127.0.0.1:7401",                  // no key
		"127.0.0.1:7401=SHA256:short",     // not a fingerprint
		"127.0.0.1=" + fp,                 // no port
		"0.0.0.0:7401=" + fp,              // not reachable
		"127.0.0.1:0=" + fp,               // port 0
		"no-such-host.invalid:7401=" + fp, // does not resolve
	} {
		var one relayFlags
		if err := one.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted: %+v", bad, one)
		}
	}
	for range 6 {
		r.Set("127.0.0.1:7401=" + fp)
	}
	if err := r.Set("127.0.0.1:7401=" + fp); err == nil || len(r) != 8 {
		t.Errorf("a ninth relay: %v (%d relays), want refused at 8", err, len(r))
	}
}
