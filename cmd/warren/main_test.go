package main

import (
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/warren-net/warren/internal/naming"
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

// TestExposeBarePortDocumented: a bare --expose port means TCP, and both the README and the error
// for a bad spec say so.
func TestExposeBarePortDocumented(t *testing.T) {
	p, _, err := parseExpose([]string{"22"})
	if err != nil || len(p) != 1 || p[0].Proto != "tcp" || p[0].Port != 22 {
		t.Fatalf("--expose 22: got %+v %v, want tcp:22", p, err)
	}
	if _, _, err := parseExpose([]string{"22x"}); err == nil || !strings.Contains(err.Error(), "PORT (TCP)") {
		t.Errorf("bad spec: got %v, want the error to name the bare PORT form", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "a bare port is TCP (`--expose 22` = `--expose tcp:22`)") {
		t.Error("README's flags section does not say a bare --expose port is TCP")
	}
}

// TestUpUnknownLogLevel: warren up refuses a --log-level it does not know, naming the valid ones.
func TestUpUnknownLogLevel(t *testing.T) {
	err := cmdUp([]string{"--log-level", "loud", "--coord", "127.0.0.1:1", "--state", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `--log-level "loud"`) || !strings.Contains(err.Error(), "trace, debug, info, warn, error, off") {
		t.Fatalf("got %v, want an error naming the valid levels", err)
	}
	for _, ok := range []string{"trace", "INFO", "warn", "off"} {
		if _, err := logLevelFlag(ok); err != nil {
			t.Errorf("logLevelFlag(%q): %v", ok, err)
		}
	}
}

// TestDefaultNodeName: the default name made from a host name is always a valid node name.
func TestDefaultNodeName(t *testing.T) {
	for host, want := range map[string]string{
		"DESKTOP-7QK2_PC":              "desktop-7qk2-pc",
		"laptop.example.com":           "laptop",
		"-_weird__Host_-":              "weird-host",
		"ÄÖÜ":                          "node",
		"":                             "node",
		"a--b":                         "a-b",
		strings.Repeat("x", 62) + "_y": strings.Repeat("x", 62),
		strings.Repeat("z", 80):        strings.Repeat("z", 63),
	} {
		got := defaultNodeName(host)
		if got != want {
			t.Errorf("defaultNodeName(%q) = %q, want %q", host, got, want)
		}
		if err := naming.Node(got); err != nil {
			t.Errorf("defaultNodeName(%q) = %q: %v", host, got, err)
		}
	}
}

// TestUpInvalidName: an explicit --name that is no node name fails at once, before any login,
// saying the rule.
func TestUpInvalidName(t *testing.T) {
	err := cmdUp([]string{"--name", "My_PC", "--coord", "127.0.0.1:1", "--state", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--name") || !strings.Contains(err.Error(), "DNS label") {
		t.Fatalf("got %v, want an error saying the node name rule", err)
	}
}
