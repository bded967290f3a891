package coord

import (
	"context"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// Join requests: a join to a network that needs approval waits for its owner. Requests expire after
// Config.JoinRequestExpiry, are bounded per node, per source address and per network
// (networks.go), and the owner is told of them: the list of requests in all its networks comes in
// a PeerDelta (Joins) after it logs in and whenever the list changes, so its node can log each new
// one and show them in `warren status`.

// DefaultJoinRequestExpiry is how long a join request waits for the owner by default.
const DefaultJoinRequestExpiry = 7 * 24 * time.Hour

// joinExpiryCheck is how often expired join requests are dropped (and their owners told) even if
// no request or owner action comes along to do it.
const joinExpiryCheck = time.Minute

// now is the server's clock for join requests and the password buckets (Config.clock in tests; the
// login buckets take it through abuse.GuardConfig.Now).
func (s *Server) now() time.Time {
	if s.cfg.clock != nil {
		return s.cfg.clock()
	}
	return time.Now()
}

// pendingSource is the source range a join request from sess counts under ("" = none: loopback).
func (s *Server) pendingSource(sess *session) string {
	if p, ok := s.guard.Limited(s.sourceOf(sess)); ok {
		return p.String()
	}
	return ""
}

// expireJoins drops the join requests older than the expiry and tells their owners. The caller
// holds changeMu; a failure is logged (the requests stay a little longer).
func (s *Server) expireJoins(ctx context.Context) {
	owners, err := s.cfg.Store.ExpirePending(ctx, s.now().Add(-s.cfg.JoinRequestExpiry))
	if err != nil {
		s.log.Error("expire join requests", "error", err)
		return
	}
	for _, o := range owners {
		s.pushJoins(ctx, o)
	}
	if len(owners) > 0 {
		s.log.Info("join requests expired", "owners", len(owners), "after", s.cfg.JoinRequestExpiry)
	}
}

// expireJoinsNow is expireJoins on the server's schedule.
func (s *Server) expireJoinsNow() {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.expireJoins(ctx)
}

// joinsOf returns the join requests awaiting owner's approval, as its node is told of them, and
// their total number.
func (s *Server) joinsOf(ctx context.Context, owner []byte) (*control.JoinRequests, int, error) {
	reqs, total, err := s.cfg.Store.JoinRequestsFor(ctx, owner, control.MaxJoinRequests)
	if err != nil {
		return nil, 0, err
	}
	out := &control.JoinRequests{Requests: make([]control.JoinRequest, 0, len(reqs)), More: total - len(reqs)}
	for _, r := range reqs {
		out.Requests = append(out.Requests, control.JoinRequest{Network: r.Network, Name: r.Name, Key: identity.Fingerprint(r.Key), At: r.At})
	}
	return out, total, nil
}

// pushJoins queues owner's current list of join requests for its node, if it is online: here, or
// through the coord it is logged in to (cluster.go). The caller holds changeMu (so lists reach the
// node in the order they were made); a failure is logged.
func (s *Server) pushJoins(ctx context.Context, owner []byte) {
	if s.pushJoinsHere(ctx, owner) {
		return
	}
	if _, ok := s.cluster.remoteOnline(keyOf(owner)); ok {
		s.publish("", store.EventJoins, owner)
	}
}

// pushJoinsHere is pushJoins for an owner logged in to this coord; it reports whether it is.
func (s *Server) pushJoinsHere(ctx context.Context, owner []byte) bool {
	s.mu.Lock()
	sess := s.sessions[keyOf(owner)]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	joins, _, err := s.joinsOf(ctx, owner)
	if err != nil {
		s.log.Error("list join requests", "error", err)
		return true
	}
	sess.mu.Lock()
	sess.joins = joins
	sess.mu.Unlock()
	s.wake(sess)
	return true
}
