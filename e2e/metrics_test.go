package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/internal/testkit"
)

// scrapeURL fetches and parses a /metrics endpoint with the Prometheus text parser.
func scrapeURL(t *testing.T, url string) (metrics.Families, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, metrics.MaxScrape))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d, %v", url, resp.StatusCode, err)
	}
	f, err := metrics.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return f, string(b)
}

// scrapeNode reads a node's metrics through the local API (warren metrics).
func scrapeNode(t *testing.T, state string) (metrics.Families, string) {
	t.Helper()
	out := warren(t, true, "metrics", "--state", state)
	f, err := metrics.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatalf("warren metrics: %v\n%s", err, out)
	}
	return f, out
}

// sample is the sum of the samples of name with the given labels (all of them: a label left out is
// summed over).
func sample(f metrics.Families, name string, labels ...string) float64 {
	v, _ := f.Sum(name, labels...)
	return v
}

// excerpt returns the lines of a scrape that start with one of the prefixes (for the log).
func excerpt(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsBinaries runs a coord, a standalone relay and three nodes as processes, each with
// --metrics on loopback, and scrapes every endpoint as Prometheus would: a and b reach each other
// directly, c only through the relay (--no-direct), a node with a bad auth key is refused. The
// values must say so: peers by path, logins and the refusal by code, relay frames, proxy requests.
// Non-loopback --metrics addresses are refused by all three commands.
func TestMetricsBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	relay := startProc(t, "warren-coord", "relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay", "key.pem"),
		"--metrics", "127.0.0.1:0")
	relayAddr, relayKey := relay.line(t, "warren-coord relay listening on"), relay.line(t, "key")
	relayMetrics := relay.line(t, "metrics on")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--no-relay",
		"--relay", relayAddr+"="+relayKey, "--metrics", "127.0.0.1:0")
	coordAddr := coord.line(t, "warren-coord listening on")
	coordMetrics := coord.line(t, "metrics on")

	webPort, _ := blobServer(t, 1024)
	socksA := freePort(t)
	nodeMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stateA, stateB, stateC := filepath.Join(tmp, "a"), filepath.Join(tmp, "b"), filepath.Join(tmp, "c")
	a := startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateA, "--name", "a", "--listen", "127.0.0.1:0",
		"--socks", fmt.Sprintf("127.0.0.1:%d", socksA), "--metrics", nodeMetrics)
	startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateB, "--name", "b", "--listen", "127.0.0.1:0",
		"--socks", "", "--expose", fmt.Sprintf("tcp:%d", webPort))
	startProc(t, "warren", "up", "--coord", coordAddr, "--state", stateC, "--name", "c", "--listen", "127.0.0.1:0",
		"--socks", "", "--no-direct", "--expose", fmt.Sprintf("tcp:%d", webPort))
	if up := a.line(t, `warren node "a" up:`); !strings.Contains(up, "metrics on http://"+nodeMetrics+"/metrics") {
		t.Errorf("warren up does not say where metrics are: %s", up)
	}
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	waitLoggedIn(t, stateC)
	warren(t, true, "network", "create", "lab", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "lab", "--state", stateB, "--password", "pw")
	warren(t, true, "network", "join", "lab", "--state", stateC, "--password", "pw")
	waitDirect(t, stateA, "b")
	waitPeerPath(t, stateA, "c", "relay", relayAddr)

	// Traffic: through a's proxy (SOCKS CONNECT and plain HTTP) to b's and c's exposed port.
	client := socksHTTP(t, fmt.Sprintf("127.0.0.1:%d", socksA))
	for _, peer := range []string{"b", "c"} {
		if body, _ := fetch(t, client, fmt.Sprintf("http://%s.warren:%d/hello", peer, webPort)); !strings.Contains(string(body), "hello") {
			t.Fatalf("GET from %s: %q", peer, body)
		}
	}
	httpProxy := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, fmt.Sprintf("http://127.0.0.1:%d", socksA)))}}
	if body, _ := fetch(t, httpProxy, fmt.Sprintf("http://b.warren:%d/hello", webPort)); !strings.Contains(string(body), "hello") {
		t.Fatalf("GET through the HTTP proxy: %q", body)
	}

	// A login with an unknown auth key is refused, and counted by its code.
	out := warren(t, false, "up", "--coord", coordAddr, "--state", filepath.Join(tmp, "bad"), "--name", "bad", "--socks", "",
		"--listen", "127.0.0.1:0", "--authkey", "wak_0123456789abcdef0123456789abcdef")
	if !strings.Contains(out, "auth key") {
		t.Errorf("bad auth key said: %s", out)
	}

	// The coord.
	var cf metrics.Families
	var ctext string
	testkit.Eventually(t, 30*time.Second, func() bool {
		cf, ctext = scrapeURL(t, coordMetrics)
		return sample(cf, "warren_coord_login_refusals_total", "code", "authkey") == 1 && sample(cf, "warren_coord_nodes_online") == 3
	}, "coord metrics never showed the refusal and 3 nodes online")
	if v := sample(cf, "warren_coord_logins_total"); v < 3 {
		t.Errorf("logins_total = %v, want at least 3", v)
	}
	if v := sample(cf, "warren_coord_networks"); v != 1 {
		t.Errorf("networks = %v, want 1", v)
	}
	if v := sample(cf, "warren_coord_fanout_seconds"); v < 2 {
		t.Errorf("fan-out latency samples = %v, want at least 2 (joins told to peers)", v)
	}
	if v := sample(cf, "warren_coord_login_refusals_total", "code", "blocked"); v != 0 {
		t.Errorf("refusals{code=blocked} = %v, want 0", v)
	}

	// The relay carried a and c's traffic.
	rf, rtext := scrapeURL(t, relayMetrics)
	if v := sample(rf, "warren_relay_frames_forwarded_total"); v < 10 {
		t.Errorf("relay frames forwarded = %v, want at least 10 (a handshake and a GET)", v)
	}
	if v := sample(rf, "warren_relay_forwarded_bytes_total"); v < 1000 {
		t.Errorf("relay bytes forwarded = %v, want at least 1000", v)
	}
	if v := sample(rf, "warren_relay_nodes"); v != 3 {
		t.Errorf("relay nodes = %v, want 3", v)
	}

	// Node a: on --metrics and through the local API, the same families.
	af, atext := scrapeURL(t, "http://"+nodeMetrics+"/metrics")
	if v := sample(af, "warren_node_peers", "path", "direct"); v != 1 {
		t.Errorf(`a: warren_node_peers{path="direct"} = %v, want 1`, v)
	}
	if v := sample(af, "warren_node_peers", "path", "relay"); v != 1 {
		t.Errorf(`a: warren_node_peers{path="relay"} = %v, want 1`, v)
	}
	for _, path := range []string{"direct", "relay"} {
		if v := sample(af, "warren_node_link_sent_bytes_total", "path", path); v < 1000 {
			t.Errorf("a: link bytes sent on %s = %v, want at least 1000", path, v)
		}
		if v := sample(af, "warren_node_link_rtt_seconds", "path", path); v != 1 {
			t.Errorf("a: RTT samples on %s = %v, want 1", path, v)
		}
	}
	if v := sample(af, "warren_node_proxy_connections_total", "kind", "socks-connect"); v < 2 {
		t.Errorf("a: socks-connect = %v, want at least 2", v)
	}
	if v := sample(af, "warren_node_proxy_connections_total", "kind", "http"); v < 1 {
		t.Errorf("a: http = %v, want at least 1", v)
	}
	bf, btext := scrapeNode(t, stateB)
	if v := sample(bf, "warren_node_proxy_connections_total", "kind", "inbound-exposed"); v < 2 {
		t.Errorf("b: inbound-exposed = %v, want at least 2 (a's SOCKS and HTTP requests)", v)
	}
	if punched := sample(af, "warren_node_punch_results_total", "result", "direct") + sample(bf, "warren_node_punch_results_total", "result", "direct"); punched < 1 {
		t.Errorf("no direct punch counted on a or b")
	}
	lf, _ := scrapeNode(t, stateA)
	if v := sample(lf, "warren_node_peers", "path", "direct"); v != 1 {
		t.Errorf(`a through the local API: warren_node_peers{path="direct"} = %v, want 1`, v)
	}
	t.Logf("coord scrape (excerpt):\n%s", excerpt(ctext, "warren_coord_logins_total", "warren_coord_login_refusals_total{code=\"authkey\"}",
		"warren_coord_fanout_seconds_count", "warren_coord_fanout_seconds_sum", "warren_coord_nodes", "warren_coord_networks"))
	t.Logf("node b scrape through warren metrics (excerpt):\n%s", excerpt(btext, "warren_node_punch", `warren_node_proxy_connections_total{kind="inbound-exposed"}`))
	t.Logf("relay scrape (excerpt):\n%s", excerpt(rtext, "warren_relay_"))
	t.Logf("node a scrape (excerpt):\n%s", excerpt(atext, "warren_node_peers", "warren_node_link_sent_bytes_total", "warren_node_link_rtt_seconds_count",
		"warren_node_link_rtt_seconds_sum", "warren_node_proxy_connections_total", "warren_node_packets_dropped_total", "warren_node_punch"))

	// Beyond loopback: refused at once, saying why.
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord2"), "--metrics", "0.0.0.0:9100"},
		{"relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay2.pem"), "--metrics", "192.0.2.1:9100"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		ob, err := exec.CommandContext(ctx, bin(t, "warren-coord"), args...).CombinedOutput()
		cancel()
		o := string(ob)
		if err == nil || !strings.Contains(o, "loopback") {
			t.Errorf("warren-coord %v: err=%v, want a refusal naming loopback:\n%s", args, err, o)
		}
	}
	if o := warren(t, false, "up", "--coord", coordAddr, "--state", filepath.Join(tmp, "d"), "--name", "d", "--socks", "",
		"--metrics", ":9100"); !strings.Contains(o, "loopback") {
		t.Errorf("warren up --metrics :9100 said: %s", o)
	}
}
