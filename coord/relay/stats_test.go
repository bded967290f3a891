package relay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/warren-net/warren/internal/metrics"
)

// TestRouteDropReasons: every refused frame is counted under its one reason, and the collector
// exports the counts.
func TestRouteDropReasons(t *testing.T) {
	tb := NewTable(1) // burst 1: the second frame from a node is over its rate
	aAddr, bAddr, cAddr := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"), netip.MustParseAddrPort("192.0.2.3:3")
	tb.Bind(key(1), aAddr, set(key(2)))
	tb.Bind(key(2), bAddr, set(key(1)))
	tb.Bind(key(3), cAddr, set(key(1)))                      // a does not name c
	tb.Route(netip.MustParseAddrPort("192.0.2.9:9"), key(2)) // unknown source
	tb.Route(aAddr, key(9))                                  // unknown destination
	tb.Route(cAddr, key(1))                                  // no consent (c's first frame: within its rate)
	if _, _, ok := tb.Route(aAddr, key(2)); !ok {
		t.Fatal("a→b refused")
	}
	for range 5 {
		tb.Route(aAddr, key(2)) // over a's rate (1/s) but for a refill, should a second pass
	}
	if got := tb.Stats().Dropped(DropRateLimited); got < 4 {
		t.Errorf("rate-limited drops = %d, want at least 4 of 5", got)
	}
	want := map[DropReason]uint64{DropUnknownSource: 1, DropUnknownDest: 1, DropNoConsent: 1}
	for r, name := range DropReasons {
		if DropReason(r) == DropRateLimited {
			continue
		}
		if got := tb.Stats().Dropped(DropReason(r)); got != want[DropReason(r)] {
			t.Errorf("drops for %s = %d, want %d", name, got, want[DropReason(r)])
		}
	}

	reg := metrics.New()
	reg.Register(tb.Collector())
	rec := &strings.Builder{}
	fams, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		rec.WriteString(f.GetName() + "\n")
	}
	if !strings.Contains(rec.String(), "warren_relay_frames_dropped_total") || !strings.Contains(rec.String(), "warren_relay_nodes") {
		t.Errorf("collector exports:\n%s", rec)
	}
	for _, f := range fams {
		if f.GetName() != "warren_relay_frames_dropped_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if l := m.GetLabel()[0].GetValue(); l == "no_consent" && m.GetCounter().GetValue() != 1 {
				t.Errorf("exported no_consent = %v, want 1", m.GetCounter().GetValue())
			}
		}
	}
}
