package coord

import (
	"context"
	"fmt"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// Ephemeral nodes (Login.Ephemeral, or an ephemeral auth key) are removed — memberships gone,
// address freed, peers told with the usual deltas — once they have been offline for
// Config.EphemeralTimeout, or at once when they log out (OpLogout). The time a node went offline is
// in the store, so a restarted server goes on where it stopped; at start it gives every ephemeral
// node at least min(timeout, maxRestartGrace) to reconnect (see initEphemeral).

// DefaultEphemeralTimeout is Config.EphemeralTimeout's default.
const DefaultEphemeralTimeout = 5 * time.Minute

// maxRestartGrace bounds the time a restarted server waits for a long-offline ephemeral node; nodes
// retry at least every 30s, so a live one is back well within it.
const maxRestartGrace = time.Minute

// reapBatch bounds the nodes one reaper pass loads at once.
const reapBatch = 100

// initEphemeral sets the timeout's default and restarts the offline clocks; New calls it before
// serving, while no node is online.
func (s *Server) initEphemeral() error {
	if s.cfg.EphemeralTimeout <= 0 {
		s.cfg.EphemeralTimeout = DefaultEphemeralTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	grace := min(s.cfg.EphemeralTimeout, maxRestartGrace)
	n, err := s.cfg.Store.RestartOfflineClocks(ctx, now, now.Add(grace-s.cfg.EphemeralTimeout))
	if err != nil {
		return fmt.Errorf("coord: %w", err)
	}
	if n > 0 {
		s.log.Info("ephemeral nodes known; each is removed unless it reconnects", "nodes", n, "within_at_least", grace)
	}
	return nil
}

// reapDue removes the ephemeral nodes that have been offline too long (New runs it periodically).
func (s *Server) reapDue() {
	// A full batch removed: there may be more right away.
	for s.reapOnce(time.Now()) == reapBatch && s.ctx.Err() == nil {
	}
}

// reapOnce removes up to reapBatch expired ephemeral nodes and returns how many it removed.
func (s *Server) reapOnce(now time.Time) int {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	cutoff := now.Add(-s.cfg.EphemeralTimeout)
	nodes, err := s.cfg.Store.ExpiredEphemeral(ctx, cutoff, reapBatch)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Error("ephemeral reaper", "error", err)
		}
		return 0
	}
	removed := 0
	for _, n := range nodes {
		s.changeMu.Lock()
		s.mu.Lock()
		online := s.sessions[keyOf(n.Key)] != nil
		s.mu.Unlock()
		if !online {
			// Conditional on the stored offline time: a node that logged in meanwhile stays.
			ok, err := s.removeLocked(ctx, n, cutoff, "offline for "+s.cfg.EphemeralTimeout.String())
			if err != nil {
				s.log.Error("ephemeral reaper", "node", keyOf(n.Key).String(), "error", err)
			}
			if ok {
				removed++
			}
		}
		s.changeMu.Unlock()
	}
	return removed
}

// removeLocked deletes the ephemeral node n (only if offline since before offlineBefore, when that
// is set) and tells its peers. The caller holds changeMu.
func (s *Server) removeLocked(ctx context.Context, n store.Node, offlineBefore time.Time, reason string) (bool, error) {
	rows, err := s.cfg.Store.Peers(ctx, n.Key)
	if err != nil {
		return false, err
	}
	removed, err := s.cfg.Store.DeleteEphemeral(ctx, n.Key, offlineBefore)
	if err != nil || !removed {
		return false, err
	}
	k := keyOf(n.Key)
	for _, r := range rows {
		s.enqueue(keyOf(r.Node.Key), k, nil)
	}
	s.log.Info("ephemeral node removed", "node", k.String(), "name", n.Name, "ipv4", n.IPv4, "reason", reason, "peers_told", len(rows))
	return true, nil
}

// markOfflineLocked records in the store that the node went offline now (it starts an ephemeral
// node's clock). The caller holds changeMu and has checked that the node has no session.
func (s *Server) markOfflineLocked(key nodeKey) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Store.MarkOffline(ctx, key[:], time.Now()); err != nil {
		s.log.Error("record node offline", "node", key.String(), "error", err)
	}
}

// loginFailed records a node whose login failed after registration as offline, unless it is
// logged in on another connection.
func (s *Server) loginFailed(key nodeKey) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.mu.Lock()
	online := s.sessions[key] != nil
	s.mu.Unlock()
	if !online {
		s.markOfflineLocked(key)
	}
}

// sessionRequest handles what a request needs before the network operations: OpLogout, and
// refusing requests on a session that was logged out or replaced. It returns nil to go on.
func (s *Server) sessionRequest(sess *session, r *control.Request) *control.Reply {
	if r.Op == control.OpLogout {
		return s.handleLogout(sess, r.ID)
	}
	s.mu.Lock()
	current := s.sessions[sess.key] == sess
	s.mu.Unlock()
	if !current {
		return &control.Reply{ID: r.ID, Code: control.CodeRefused, Error: "this session has ended (logged out or replaced by a newer login)"}
	}
	return nil
}

// handleLogout ends sess for good: an ephemeral node is removed at once and its peers are told;
// for other nodes nothing changes (they go offline when they close the connection).
func (s *Server) handleLogout(sess *session, id uint64) *control.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	n, err := s.cfg.Store.Node(ctx, sess.key[:])
	if err != nil {
		return s.failed(id, err)
	}
	if !n.Ephemeral {
		return &control.Reply{ID: id}
	}
	if !s.dropSession(sess) {
		return &control.Reply{ID: id, Code: control.CodeRefused, Error: "this session has ended (logged out or replaced by a newer login)"}
	}
	if _, err := s.removeLocked(ctx, n, time.Time{}, "logged out"); err != nil {
		s.markOfflineLocked(sess.key) // the reaper retries
		return s.failed(id, err)
	}
	return &control.Reply{ID: id}
}
