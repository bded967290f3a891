package coord

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// What the operator's tools (package coord/operator) need from a running server beyond the store:
// who is online from where, removing a node so that its peers are told, and the block list file.

// OnlineNode is a logged-in node as the server sees it.
type OnlineNode struct {
	Observed netip.AddrPort // where its control connection comes from
	Since    time.Time      // when it logged in
}

// Online returns the logged-in nodes, keyed by public key (as a string of its bytes).
func (s *Server) Online() map[string]OnlineNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]OnlineNode, len(s.sessions))
	for k, sess := range s.sessions {
		out[string(k[:])] = OnlineNode{Observed: sess.observed, Since: sess.since}
	}
	return out
}

// BlockListFile returns Config.BlockList: the file the server reads its block list from ("" = none).
func (s *Server) BlockListFile() string { return s.cfg.BlockList }

// Removed describes a node RemoveNode removed.
type Removed struct {
	Node      store.Node
	WasOnline bool // its control connection was closed
	PeersTold int  // nodes that shared a network with it
}

// RemoveNode deletes the node with the given key — memberships gone, address freed — closes its
// control connection if it is logged in and tells its peers it is gone. It returns an error
// wrapping store.ErrNotFound for an unknown node. Nothing stops the node from logging in again
// later, as a new node in no network; to keep it out, block its address.
func (s *Server) RemoveNode(ctx context.Context, key []byte) (Removed, error) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	n, err := s.cfg.Store.Node(ctx, key)
	if err != nil {
		return Removed{}, err
	}
	rows, err := s.cfg.Store.Peers(ctx, key)
	if err != nil {
		return Removed{}, fmt.Errorf("remove node: %w", err)
	}
	if ok, err := s.cfg.Store.DeleteNode(ctx, key); err != nil {
		return Removed{}, err
	} else if !ok {
		return Removed{}, fmt.Errorf("remove node: %w", store.ErrNotFound)
	}
	k := keyOf(key)
	// Unregister the session before closing it, so that its logout does not announce it offline.
	s.mu.Lock()
	sess := s.sessions[k]
	s.mu.Unlock()
	r := Removed{Node: n, PeersTold: len(rows)}
	if sess != nil && s.dropSession(sess) {
		r.WasOnline = true
		sess.conn.CloseWithError(closeOK, "removed by the server operator")
	}
	for _, row := range rows {
		s.enqueue(keyOf(row.Node.Key), k, nil)
	}
	s.clearPresence(k, false) // its logout, skipped above, would have
	s.publish("", store.EventGone, k[:])
	s.log.Info("node removed by the operator", "node", identity.Label(n.Name, k[:]), "ipv4", n.IPv4, "was_online", r.WasOnline, "peers_told", r.PeersTold)
	return r, nil
}

// errRemovedDuringLogin fails a login whose node was deleted (by the operator or the ephemeral
// reaper) between its registration and its admission; the node tries again and registers anew.
var errRemovedDuringLogin = errors.New("node removed while it logged in; log in again")

// stillRegistered checks, under changeMu, that a node registered at the start of its login was not
// deleted since.
func (s *Server) stillRegistered(ctx context.Context, key nodeKey) error {
	_, err := s.cfg.Store.Node(ctx, key[:])
	if errors.Is(err, store.ErrNotFound) {
		return errRemovedDuringLogin
	}
	if err != nil {
		return s.storeError("reload node", err)
	}
	return nil
}
