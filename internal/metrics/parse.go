package metrics

import (
	"fmt"
	"io"
	"iter"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MaxScrape bounds the text Parse reads.
const MaxScrape = 4 << 20

// Families is a parsed scrape, by metric name.
type Families map[string]*dto.MetricFamily

// Parse reads a scrape in the Prometheus text format (at most MaxScrape bytes), as Prometheus would.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, MaxScrape))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// Value returns the value of the first sample of metric name whose labels include the given
// name/value pairs: a counter's or gauge's value, a histogram's sample count. ok is false if there
// is none.
func (f Families) Value(name string, labels ...string) (v float64, ok bool) {
	for v := range f.matching(name, labels) {
		return v, true
	}
	return 0, false
}

// Sum adds up the values (as Value reads them) of every sample of metric name whose labels include
// the given name/value pairs; n is how many there were.
func (f Families) Sum(name string, labels ...string) (sum float64, n int) {
	for v := range f.matching(name, labels) {
		sum += v
		n++
	}
	return sum, n
}

// matching yields the values of the samples of name whose labels include labels' pairs.
func (f Families) matching(name string, labels []string) iter.Seq[float64] {
	return func(yield func(float64) bool) {
		fam := f[name]
		if fam == nil {
			return
		}
		for _, m := range fam.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			default:
				continue
			}
			if !yield(v) {
				return
			}
		}
	}
}

// hasLabels reports whether m has every name/value pair in labels.
func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
