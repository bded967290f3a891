package coord

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/metrics"
)

// refusalCodes are the label values of warren_coord_login_refusals_total: the control codes a login
// can be refused with. Any other code counts as "other", so the label set stays bounded whatever a
// future error path returns.
var refusalCodes = []string{
	string(control.CodeInvalid), string(control.CodeRefused), string(control.CodeInternal), string(control.CodeVersion),
	string(control.CodeAuthKey), string(control.CodeBlocked), string(control.CodeRateLimited), string(control.CodeNameTaken),
	string(control.CodeTooManyNetworks), string(control.CodeNetworkFull), string(control.CodeBanned), string(control.CodeLocked),
	string(control.CodeNotFound), string(control.CodeWrongPassword), string(control.CodeClosed), "other",
}

// fanoutBuckets span a local delta (a millisecond) to a node that reads slowly (tens of seconds).
var fanoutBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// coordMetrics are the coord's own event metrics; gauges are read from the server at scrape time.
type coordMetrics struct {
	logins   prometheus.Counter
	refusals *prometheus.CounterVec
	fanout   prometheus.Histogram
}

func newCoordMetrics() *coordMetrics {
	m := &coordMetrics{
		logins: prometheus.NewCounter(prometheus.CounterOpts{Name: "warren_coord_logins_total",
			Help: "Completed node logins (rate() gives logins per second)."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_coord_login_refusals_total",
			Help: "Logins refused, by the control error code the node was given (\"other\" for any code not listed)."}, []string{"code"}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "warren_coord_fanout_seconds",
			Help: "Time from a change about a peer (login, logout, endpoints, membership) being queued for a node to the peer delta carrying it written to that node.", Buckets: fanoutBuckets}),
	}
	for _, c := range refusalCodes {
		m.refusals.WithLabelValues(c) // every code shows, at 0, from the first scrape
	}
	return m
}

// refused counts a refused login by its error's code; an error without one counts as internal.
func (m *coordMetrics) refused(err error) {
	code := string(control.CodeInternal)
	if cerr, ok := errors.AsType[*control.Error](err); ok {
		code = string(cerr.Code)
	}
	m.refusals.WithLabelValues(metrics.Label(code, refusalCodes)).Inc()
}

// Register adds the coord's metrics to r: logins and refusals by code, fan-out latency, nodes online,
// nodes and networks stored, logins pending, and the built-in relay's warren_relay_* counters.
func (s *Server) Register(r *metrics.Registry) {
	r.Register(s.metrics.logins, s.metrics.refusals, s.metrics.fanout, s.relay.Collector())
	r.GaugeFunc("warren_coord_nodes_online", "Nodes logged in now.", func() float64 { return float64(s.OnlineCount()) })
	r.GaugeFunc("warren_coord_logins_pending", "Connections handshaking or not yet logged in.", func() float64 {
		p, _ := s.PendingLogins()
		return float64(p)
	})
	nodes := prometheus.NewDesc("warren_coord_nodes", "Nodes the coord knows (online or not).", nil, nil)
	networks := prometheus.NewDesc("warren_coord_networks", "Networks the coord holds.", nil, nil)
	r.Register(metrics.NewFunc(func(ch chan<- prometheus.Metric) {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		n, nets, err := s.cfg.Store.Totals(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(nodes, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(nodes, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(networks, prometheus.GaugeValue, float64(nets))
	}, nodes, networks))
}
