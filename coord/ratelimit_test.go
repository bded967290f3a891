package coord

import (
	"strings"
	"testing"

	"github.com/warren-net/warren/control"
)

// TestRequestRateLimited (issue 13, item 8): one logged-in node used to drive 21,000 requests a
// second through the coord. Now each node gets a burst of requests, then a steady rate; beyond it
// a request is refused with code rate_limited, not performed, and other nodes are not affected.
func TestRequestRateLimited(t *testing.T) {
	const burst = 5
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.RequestRate, c.RequestBurst = 0.001, burst })
	floodKey := mustKey(t)
	flood, other := dialKey(t, srv, floodKey), dial(t, srv)
	flood.login(t, "flood")
	other.login(t, "other")
	for range burst {
		flood.do(t, control.CodeNotMember, control.Request{Op: control.OpLeave, Network: "lan"})
	}
	rep := flood.do(t, control.CodeRateLimited, control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	if !strings.Contains(rep.Error, "too many requests") || !strings.Contains(rep.Error, "try again in") {
		t.Errorf("refusal %q does not say why and when to try again", rep.Error)
	}
	other.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	// The refused create did nothing: the name was free for the other node.
	flood.do(t, control.CodeRateLimited, control.Request{Op: control.OpJoin, Network: "lan"})

	// Logging in again does not refill the bucket.
	flood.conn.CloseWithError(0, "")
	again := dialKey(t, srv, floodKey)
	again.login(t, "flood")
	again.do(t, control.CodeRateLimited, control.Request{Op: control.OpLeave, Network: "lan"})
}

func TestRequestRateDefaults(t *testing.T) {
	srv := startServer(t)
	if srv.cfg.RequestRate != DefaultRequestRate || srv.cfg.RequestBurst != DefaultRequestBurst || DefaultRequestBurst < 100 {
		t.Errorf("request limit %v/s burst %d", srv.cfg.RequestRate, srv.cfg.RequestBurst)
	}
}
