package coord

import (
	"fmt"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
)

// Control requests per node. Each request takes the change lock or the store, so one logged-in node
// that sends them as fast as it can (a runaway script, or an attack) would otherwise keep a core busy
// and everyone else's requests waiting. The bucket is per node key, not per connection: logging in
// again does not refill it. The defaults are far above what a person or a script that waits for
// its replies needs.
const (
	DefaultRequestRate  = 20
	DefaultRequestBurst = 100
)

func (s *Server) initRequestLimit() {
	c := &s.cfg
	if c.RequestRate == 0 {
		c.RequestRate, c.RequestBurst = DefaultRequestRate, DefaultRequestBurst
	}
	c.RequestBurst = max(c.RequestBurst, 1)
	s.requests = abuse.NewLimiter[nodeKey](c.RequestRate, c.RequestBurst, maxLimiters)
}

// limitRequest answers r with control.CodeRateLimited if sess's node is over its request rate, and
// returns nil if r may go ahead.
func (s *Server) limitRequest(sess *session, r *control.Request) *control.Reply {
	now := s.now()
	if s.requests.Allow(sess.key, now) {
		return nil
	}
	wait := s.requests.Wait(sess.key, now)
	return &control.Reply{ID: r.ID, Code: control.CodeRateLimited, Error: fmt.Sprintf(
		"too many requests from this node (at most %d at once, then %g a second); try again in %v",
		s.cfg.RequestBurst, float64(s.cfg.RequestRate), max(wait, time.Millisecond).Round(time.Millisecond))}
}
