package node

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// scrape reads the node's metrics as a scraper would: over HTTP, parsed with the Prometheus text
// parser.
func scrape(t *testing.T, n *Node) metrics.Families {
	t.Helper()
	rec := &recorder{header: http.Header{}}
	n.registry.Handler().ServeHTTP(rec, mustRequest(t))
	if rec.code != 0 && rec.code != http.StatusOK {
		t.Fatalf("scrape: HTTP %d: %s", rec.code, rec.body.String())
	}
	fams, err := metrics.Parse(strings.NewReader(rec.body.String()))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func mustRequest(t *testing.T) *http.Request {
	req, err := http.NewRequest(http.MethodGet, "http://local.warren/v1/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.WriteString(string(b)) }
func (r *recorder) WriteHeader(code int)        { r.code = code }

// value is the sum of the samples of name with the given labels; it fails the test if there are none.
func value(t *testing.T, f metrics.Families, name string, labels ...string) float64 {
	t.Helper()
	v, n := f.Sum(name, labels...)
	if n == 0 {
		t.Fatalf("no sample %s%v in the scrape", name, labels)
	}
	return v
}

// TestNodeMetrics: a node with a direct link to one peer shows it by path, counts the link's
// traffic and RTT, and its drop counters are the ones warren status shows.
func TestNodeMetrics(t *testing.T) {
	n, _, _, got := linkedNode(t)
	n.started.Store(true) // linkedNode set the parts Start would have
	pkt := ipPacket(self4, peer4, packet.ProtoUDP, make([]byte, 100))
	n.output(pkt)
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the packet never arrived")
	}
	// The send queue counts a packet once Send has returned, which may be after the peer has it.
	testkit.Eventually(t, 10*time.Second, func() bool { return n.Status().Stats.PacketsSent >= 1 },
		"the packet that arrived was never counted as sent")
	// Three spoofed packets: from an address the sender does not own, from no peer, malformed.
	n.receive(peer.Key{9}, ipPacket(netip.MustParseAddr("100.64.0.9"), self4, packet.ProtoUDP, nil))
	n.receive(peer.Key{9}, []byte{0x45, 0})

	f := scrape(t, n)
	if v := value(t, f, "warren_node_peers", "path", "direct"); v != 1 {
		t.Errorf("peers on the direct path = %v, want 1", v)
	}
	if v := value(t, f, "warren_node_peers", "path", "relay"); v != 0 {
		t.Errorf("peers on the relay path = %v, want 0", v)
	}
	if v := value(t, f, "warren_node_link_rtt_seconds", "path", "direct"); v != 1 {
		t.Errorf("RTT samples on the direct path = %v, want 1 (one link up)", v)
	}
	for _, m := range []string{"warren_node_link_sent_bytes_total", "warren_node_link_received_bytes_total",
		"warren_node_link_sent_packets_total", "warren_node_link_received_packets_total"} {
		if v := value(t, f, m, "path", "direct"); v <= 0 {
			t.Errorf("%s{path=direct} = %v, want > 0 after a handshake and a packet", m, v)
		}
		if v := value(t, f, m, "path", "relay"); v != 0 {
			t.Errorf("%s{path=relay} = %v, want 0", m, v)
		}
	}
	st := n.Status().Stats
	if v := value(t, f, "warren_node_packets_sent_total"); v != float64(st.PacketsSent) || v < 1 {
		t.Errorf("packets sent = %v, status says %d (want the same, at least 1)", v, st.PacketsSent)
	}
	if v := value(t, f, "warren_node_packets_dropped_total", "reason", "spoofed"); v != 2 || v != float64(st.DroppedSpoofed) {
		t.Errorf("spoofed drops = %v, status says %d, want 2", v, st.DroppedSpoofed)
	}
	for _, kind := range proxyKinds {
		if _, ok := f.Value("warren_node_proxy_connections_total", "kind", kind); !ok {
			t.Errorf("proxy kind %q missing: every kind shows from the first scrape", kind)
		}
	}
	// One side of the pair dialed the direct link: its punch counters say so.
	if v := value(t, f, "warren_node_punch_results_total", "result", "failed"); v != 0 {
		t.Errorf("failed punches = %v, want 0", v)
	}
	// No label names a peer: every label value is from a fixed set.
	for name, fam := range f {
		if !strings.HasPrefix(name, "warren_") {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if len(lp.GetValue()) > 24 {
					t.Errorf("%s has label %s=%q: labels are bounded names, never keys", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// TestNodeMetricsDuringStart: the local API serves metrics and status while Start runs (here:
// trying to reach a coord that is not there); neither may read what Start is still setting (run
// with -race).
func TestNodeMetricsDuringStart(t *testing.T) {
	dir := t.TempDir()
	n, err := New(Config{StateDir: dir, Coord: "127.0.0.1:1", Name: "a", Logger: testkit.Logger(t, "a"), CoordTimeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	scraped := 0
	go func() {
		defer wg.Done()
		c := localapi.NewClient(dir)
		for ctx.Err() == nil {
			c.Status(ctx) // status too reads the node while Start runs
			b, err := c.Metrics(ctx)
			if err != nil { // not up yet, or gone: poll again
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			if !strings.Contains(string(b), `warren_node_peers{path="direct"} 0`) {
				t.Errorf("scrape during Start: no direct-path peers line:\n%s", b)
				return
			}
			scraped++
		}
	}()
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a coord")
	}
	cancel()
	wg.Wait()
	t.Logf("%d scrapes during Start", scraped)
	if scraped == 0 {
		t.Error("no scrape succeeded while Start ran")
	}
}

// TestNodeMetricsLoopbackOnly: Config.Metrics beyond loopback is refused before anything starts.
func TestNodeMetricsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9100", "192.0.2.1:9100", ":9100", "example.com:9100"} {
		_, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "a", Metrics: addr})
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Metrics %q: err = %v, want a refusal naming loopback", addr, err)
		}
	}
	if _, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "a", Metrics: "127.0.0.1:0"}); err != nil {
		t.Errorf("Metrics 127.0.0.1:0: %v", err)
	}
}
