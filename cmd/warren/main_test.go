package main

import (
	"flag"
	"reflect"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	state := fs.String("state", "", "")
	pw := fs.String("password", "", "")
	pos, err := parse(fs, []string{"--state", "S", "join", "--password", "P", "net", "--", "-x"})
	if err != nil {
		t.Fatal(err)
	}
	if *state != "S" || *pw != "P" || !reflect.DeepEqual(pos, []string{"join", "net", "-x"}) {
		t.Errorf("state=%q pw=%q pos=%q", *state, *pw, pos)
	}
}

func TestParseExpose(t *testing.T) {
	ports, proxy, err := parseExpose([]string{"tcp:22", "8080", "tcp:443+proxy"})
	if err != nil || len(ports) != 3 || ports[0].Port != 22 || ports[1].Proto != "tcp" || ports[1].Port != 8080 ||
		ports[2].Port != 443 || len(proxy) != 1 || proxy[0] != 443 {
		t.Errorf("got %+v %v, %v", ports, proxy, err)
	}
	if p, _, err := parseExpose([]string{"udp:27015"}); err != nil || p[0].Proto != "udp" {
		t.Errorf("udp: %+v %v", p, err)
	}
	for _, bad := range []string{"tcp:0", "tcp:70000", "sctp:22", "tcp:x", "udp:53+proxy", "tcp:22+proxyx"} {
		if _, _, err := parseExpose([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
