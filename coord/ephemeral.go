package coord

import (
	"context"
	"fmt"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
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

// reapBatch bounds the nodes one reaper pass loads and removes in one store transaction (under
// changeMu: logins wait for it).
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
	// A full batch loaded and some removed: there may be more right away.
	for s.ctx.Err() == nil {
		if loaded, removed := s.reapOnce(time.Now()); loaded < reapBatch || removed == 0 {
			break
		}
	}
	s.forgetAbandoned(time.Now())
	s.reapUnfinished(time.Now())
}

// abandonedAfter is how long a node that is in no network may stay offline before the server
// forgets it: it has no peers and no use for its overlay address, and new identities are cheap.
const abandonedAfter = 30 * 24 * time.Hour

// forgetAbandoned deletes nodes in no network that have been offline for abandonedAfter, in
// batches (New runs it with the reaper).
func (s *Server) forgetAbandoned(now time.Time) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	var total int64
	for ctx.Err() == nil {
		n, err := s.cfg.Store.DeleteAbandoned(ctx, now.Add(-abandonedAfter), reapBatch)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("forget abandoned nodes", "error", err)
			}
			break
		}
		total += n
		if n < reapBatch {
			break
		}
	}
	if total > 0 {
		s.log.Info("forgot nodes that are in no network and were offline too long", "nodes", total, "offline_for", abandonedAfter)
	}
}

// reapOnce loads up to reapBatch expired ephemeral nodes and removes those not online in one store
// transaction; it returns how many it loaded and how many it removed.
func (s *Server) reapOnce(now time.Time) (loaded, removed int) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	cutoff := now.Add(-s.cfg.EphemeralTimeout)
	nodes, err := s.cfg.Store.ExpiredEphemeral(ctx, cutoff, reapBatch)
	if err != nil || len(nodes) == 0 {
		if err != nil && s.ctx.Err() == nil {
			s.log.Error("ephemeral reaper", "error", err)
		}
		return 0, 0
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	keys := make([][]byte, 0, len(nodes))
	byKey := make(map[nodeKey]store.Node, len(nodes))
	s.mu.Lock()
	for _, n := range nodes {
		if k := keyOf(n.Key); s.sessions[k] == nil {
			keys = append(keys, n.Key)
			byKey[k] = n
		}
	}
	s.mu.Unlock()
	if len(keys) == 0 {
		return len(nodes), 0
	}
	// Conditional on the stored offline time: a node that logged in meanwhile stays.
	reaped, err := s.cfg.Store.DeleteExpiredEphemeral(ctx, keys, cutoff)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Error("ephemeral reaper", "nodes", len(keys), "error", err)
		}
		return len(nodes), 0
	}
	reason := "offline for " + s.cfg.EphemeralTimeout.String()
	told := 0
	for _, r := range reaped {
		k := keyOf(r.Key)
		for _, p := range r.Peers {
			s.enqueue(keyOf(p), k, nil)
		}
		s.publish("", store.EventGone, k[:])
		told += len(r.Peers)
		n := byKey[k]
		s.log.Debug("ephemeral node removed", "node", identity.Label(n.Name, k[:]), "ipv4", n.IPv4, "reason", reason, "peers_told", len(r.Peers))
	}
	if len(reaped) > 0 {
		s.log.Info("ephemeral nodes removed", "nodes", len(reaped), "reason", reason, "deltas", told)
	}
	return len(nodes), len(reaped)
}

// removeLocked deletes the ephemeral node n at once (OpLogout) and tells its peers. The caller
// holds changeMu.
func (s *Server) removeLocked(ctx context.Context, n store.Node, reason string) error {
	rows, err := s.cfg.Store.Peers(ctx, n.Key)
	if err != nil {
		return err
	}
	removed, err := s.cfg.Store.DeleteEphemeral(ctx, n.Key)
	if err != nil || !removed {
		return err
	}
	k := keyOf(n.Key)
	for _, r := range rows {
		s.enqueue(keyOf(r.Node.Key), k, nil)
	}
	s.publish("", store.EventGone, k[:])
	s.log.Info("ephemeral node removed", "node", identity.Label(n.Name, k[:]), "ipv4", n.IPv4, "reason", reason, "peers_told", len(rows))
	return nil
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
	if err := s.removeLocked(ctx, n, "logged out"); err != nil {
		s.markOfflineLocked(sess.key) // the reaper retries
		return s.failed(id, err)
	}
	return &control.Reply{ID: id}
}
