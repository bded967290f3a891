package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:9100": true, "[::1]:9100": true, "localhost:9100": true, "127.0.0.2:0": true,
		"0.0.0.0:9100": false, ":9100": false, "[::]:9100": false, "192.0.2.1:9100": false, "example.com:9100": false, "127.0.0.1": false,
	} {
		if err := CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
	if _, err := Listen("0.0.0.0:0", http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Listen on 0.0.0.0: %v, want a refusal naming loopback", err)
	}
}

// TestServe: a registry served on loopback parses back with the values it holds; nothing but
// /metrics is served.
func TestServe(t *testing.T) {
	r := New()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_test_total", Help: "test"}, []string{"kind"})
	r.Register(c)
	c.WithLabelValues("a").Add(3)
	c.WithLabelValues("b").Add(4)
	r.GaugeFunc("warren_test_gauge", "test", func() float64 { return 2.5 })
	s, err := Listen("127.0.0.1:0", r.Handler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Value("warren_test_total", "kind", "b"); !ok || v != 4 {
		t.Errorf("warren_test_total{kind=b} = %v, %v; want 4", v, ok)
	}
	if v, n := f.Sum("warren_test_total"); n != 2 || v != 7 {
		t.Errorf("sum of warren_test_total = %v over %d, want 7 over 2", v, n)
	}
	if v, _ := f.Value("warren_test_gauge"); v != 2.5 {
		t.Errorf("gauge = %v, want 2.5", v)
	}
	if _, ok := f.Value("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}
	resp, err = http.Get("http://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / = %d, want 404", resp.StatusCode)
	}
}

func TestLabel(t *testing.T) {
	allowed := []string{"x", "y"}
	if Label("x", allowed) != "x" || Label("zzz", allowed) != "other" {
		t.Error("Label does not bound values to the set")
	}
}
