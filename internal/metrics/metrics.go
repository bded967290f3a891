// Package metrics serves Prometheus metrics for the coord, the standalone relay and the node: a
// private registry (never the client library's global default, so nothing registered by a
// dependency leaks into a scrape and two servers in one process do not collide), constructors that
// register as they create, and a listener that refuses non-loopback addresses, because the
// endpoint has no authentication.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric warren exports.
const Namespace = "warren"

// Registry is a private Prometheus registry with the Go runtime and process collectors.
type Registry struct {
	reg *prometheus.Registry
}

// New returns a registry holding the Go runtime and process collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{reg: reg}
}

// Register adds collectors; a duplicate or inconsistent one panics (a programming error).
func (r *Registry) Register(cs ...prometheus.Collector) { r.reg.MustRegister(cs...) }

// Gatherer returns the registry for tests and custom handlers.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry in the Prometheus text format (or OpenMetrics when asked for). A
// collector's error is served as HTTP 500 with the error text.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
}

// CounterFunc registers a counter whose value f returns at scrape time (f must be monotonic and safe
// for concurrent use).
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// GaugeFunc registers a gauge whose value f returns at scrape time.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Func is a collector computed at scrape time: collect sends const metrics for the descriptions it
// was created with. It keeps the sources of truth (atomic counters, live link stats) where they are
// instead of mirroring them into Prometheus types.
type Func struct {
	descs   []*prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

// NewFunc returns a collector of the given descriptions; collect must send only metrics of them.
func NewFunc(collect func(ch chan<- prometheus.Metric), descs ...*prometheus.Desc) *Func {
	return &Func{descs: descs, collect: collect}
}

// Describe implements prometheus.Collector.
func (f *Func) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *Func) Collect(ch chan<- prometheus.Metric) { f.collect(ch) }

// CheckLoopback refuses a metrics address beyond loopback: the endpoint has no authentication, and
// what it tells (peer counts, traffic, refusals) is for the operator only. "localhost" is accepted.
func CheckLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("metrics address %q: want HOST:PORT: %w", hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to serve metrics on %q: the endpoint has no authentication, use a loopback address (127.0.0.1:PORT, [::1]:PORT) and scrape through a tunnel or a local agent", hostport)
	}
	return nil
}

// Server serves a Handler on a loopback TCP address until Close.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr (loopback only, see CheckLoopback) and serves h on it in a goroutine. The path
// is /metrics; every other path is 404.
func Listen(addr string, h http.Handler) (*Server, error) {
	if err := CheckLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	s := &Server{ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener failed: Close still works; nothing else to tell
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server and waits for its goroutine, giving running scrapes a second to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}

// Label returns v if it is one of allowed, else "other": label values from data stay a bounded set.
func Label(v string, allowed []string) string {
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	return "other"
}
