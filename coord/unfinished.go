package coord

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// A node's row is written when its first login registers it (UpsertNode), before admission (auth
// key, ephemerality) decides whether it gets in. A node that never completed a login is not kept:
// a refused first login deletes the row again (its address is free at once, never having been
// anyone's peer), and rows a crash or a failed delete left behind are reaped after
// unfinishedAfter. When the store is full, a known node still logs in: its row says all the login
// needs, and only its last-seen time goes unrecorded.

// unfinishedAfter is how long a node row may stay without a completed login before the reaper
// deletes it; a login takes at most LoginTimeout (10 s by default).
const unfinishedAfter = 10 * time.Minute

// registerNode registers the node (or updates a known one's last-seen time). With the storage full,
// a known node whose login completed before is read instead: it logs in without a write.
//
// A login without an auth key has no admission decision to wait for (admit only marks the node
// ephemeral if it asks), so its registration records that and the completed login in the same
// write: the node's row never exists unfinished, and the login costs one commit instead of three.
func (s *Server) registerNode(ctx context.Context, key nodeKey, l *control.Login, log hclog.Logger) (store.Node, error) {
	var opts store.LoginOptions
	if l.AuthKey == "" {
		opts = store.LoginOptions{Ephemeral: l.Ephemeral, Complete: true}
	}
	node, err := s.cfg.Store.RegisterLogin(ctx, key[:], l.Name, opts)
	if err == nil {
		return node, nil
	}
	if store.StorageFull(err) {
		if known, kerr := s.cfg.Store.Node(ctx, key[:]); kerr == nil && known.LoginDone {
			log.Warn("storage full: known node logs in without its last-seen time recorded")
			return known, nil
		}
	}
	return store.Node{}, s.storeError("register node", err)
}

// forgetUnfinished deletes the node if no login of it completed: its first login was just refused.
func (s *Server) forgetUnfinished(key nodeKey, log hclog.Logger) {
	s.changeMu.Lock() // a concurrent login of the same key completes before, or finds the row gone
	defer s.changeMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := s.cfg.Store.DeleteUnfinished(ctx, key[:])
	switch {
	case err != nil:
		log.Warn("could not delete the node of a refused first login; the reaper will", "error", err, "after", unfinishedAfter)
	case ok:
		log.Info("first login refused: node deleted, its address is free")
	}
}

// reapUnfinished deletes nodes registered more than unfinishedAfter ago whose login never
// completed (New runs it with the ephemeral reaper).
func (s *Server) reapUnfinished(now time.Time) {
	// No changeMu: the deletion is conditional on login_done = 0 in its transaction, and a login
	// that completes meanwhile finds its row gone (stillRegistered) or is not deleted.
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	n, err := s.cfg.Store.DeleteStaleUnfinished(ctx, now.Add(-unfinishedAfter), reapBatch)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Error("reap unfinished nodes", "error", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("deleted nodes whose login never completed", "nodes", n, "registered_before", now.Add(-unfinishedAfter).Format(time.RFC3339))
	}
}
