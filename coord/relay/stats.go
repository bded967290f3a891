package relay

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-net/warren/internal/metrics"
)

// DropReason says why a relay frame was not forwarded.
type DropReason int

// Reasons a relay frame is dropped. Their names (DropReasons) are the metrics' label values.
const (
	DropBlocked       DropReason = iota // the source address is on the block list
	DropMalformed                       // the frame does not parse
	DropUnknownSource                   // no node is bound at the frame's source address
	DropUnknownDest                     // the addressed node is not bound here (or is the sender)
	DropRateLimited                     // the sender is over its packet rate
	DropNoConsent                       // the two nodes do not both consent to each other
	numDropReasons
)

// DropReasons names the reasons, indexed by DropReason.
var DropReasons = [numDropReasons]string{"blocked", "malformed", "unknown_source", "unknown_destination", "rate_limited", "no_consent"}

// Stats counts the relay frames a Table's forwarding loop handled. Safe for concurrent use.
type Stats struct {
	frames atomic.Uint64 // frames forwarded
	bytes  atomic.Uint64 // their payload bytes (the peers' QUIC packets)
	drops  [numDropReasons]atomic.Uint64
}

// Forwarded returns the frames forwarded and their payload bytes.
func (s *Stats) Forwarded() (frames, bytes uint64) { return s.frames.Load(), s.bytes.Load() }

// Dropped returns the frames dropped for reason r.
func (s *Stats) Dropped(r DropReason) uint64 { return s.drops[r].Load() }

func (s *Stats) drop(r DropReason) { s.drops[r].Add(1) }

// Stats returns the table's forwarding counters.
func (t *Table) Stats() *Stats { return &t.stats }

// Collector exports a Table's counters as warren_relay_* metrics, read at scrape time.
func (t *Table) Collector() prometheus.Collector {
	frames := prometheus.NewDesc("warren_relay_frames_forwarded_total", "Relay frames forwarded between nodes.", nil, nil)
	bytes := prometheus.NewDesc("warren_relay_forwarded_bytes_total", "Payload bytes of the relay frames forwarded (the peers' encrypted QUIC packets).", nil, nil)
	drops := prometheus.NewDesc("warren_relay_frames_dropped_total", "Relay frames not forwarded, by reason.", []string{"reason"}, nil)
	bound := prometheus.NewDesc("warren_relay_nodes", "Nodes bound in the relay table (logged in to this relay).", nil, nil)
	return metrics.NewFunc(func(ch chan<- prometheus.Metric) {
		f, b := t.stats.Forwarded()
		ch <- prometheus.MustNewConstMetric(frames, prometheus.CounterValue, float64(f))
		ch <- prometheus.MustNewConstMetric(bytes, prometheus.CounterValue, float64(b))
		for r, name := range DropReasons {
			ch <- prometheus.MustNewConstMetric(drops, prometheus.CounterValue, float64(t.stats.Dropped(DropReason(r))), name)
		}
		ch <- prometheus.MustNewConstMetric(bound, prometheus.GaugeValue, float64(t.Len()))
	}, frames, bytes, drops, bound)
}
