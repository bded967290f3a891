package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// handleRequest performs a network operation for sess and returns the reply.
func (s *Server) handleRequest(sess *session, r *control.Request) *control.Reply {
	if rep := s.sessionRequest(sess, r); rep != nil {
		return rep
	}
	if r.Op.IsOwnerAction() {
		return s.ownerRequest(sess, r)
	}
	if r.Op == control.OpRename {
		return s.handleRename(sess, r)
	}
	if isACLOp(r.Op) {
		return s.handleACL(sess, r)
	}
	if err := store.ValidNetworkName(r.Network); err != nil {
		return s.failed(r.ID, &control.Error{Code: control.CodeInvalid, Message: err.Error()})
	}
	if r.Op == control.OpCreate {
		if err := createAccess(r); err != nil {
			return s.failed(r.ID, err)
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	p, err := s.prepare(ctx, sess, r)
	if err != nil {
		return s.failed(r.ID, err)
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()

	before, err := s.peerSet(ctx, sess.key)
	if err != nil {
		return s.failed(r.ID, err)
	}
	if err := s.apply(ctx, sess, r, p); err != nil {
		return s.failed(r.ID, err)
	}
	if err := s.pushACL(ctx, sess.key, r.Network); err != nil { // before the peers it applies to
		return s.failed(r.ID, err)
	}
	if err := s.refreshPeers(sess.key, before); err != nil {
		return s.failed(r.ID, err)
	}
	nets, err := s.cfg.Store.NetworksOf(ctx, sess.key[:])
	if err != nil {
		return s.failed(r.ID, err)
	}
	sess.mu.Lock()
	sess.nets = nets // the reply tells the node
	sess.mu.Unlock()
	sess.log.Info("network request done", "op", r.Op, "network", r.Network)
	return &control.Reply{ID: r.ID, Networks: nonNil(nets)}
}

// apply performs r with the password work p done; the caller holds changeMu.
func (s *Server) apply(ctx context.Context, sess *session, r *control.Request, p prepared) error {
	switch r.Op {
	case control.OpCreate:
		if err := s.checkLimits(ctx, "", sess.key[:]); err != nil {
			return err
		}
		err := s.cfg.Store.CreateNetwork(ctx, r.Network, p.hash, sess.key[:])
		if errors.Is(err, store.ErrExists) {
			return &control.Error{Code: control.CodeExists, Message: fmt.Sprintf("network %q already exists", r.Network)}
		}
		if err == nil && r.Approval {
			err = s.cfg.Store.SetApproval(ctx, r.Network, true)
		}
		if err == nil && r.Open {
			err = s.cfg.Store.SetOpen(ctx, r.Network, true)
		}
		return err
	case control.OpJoin:
		return s.join(ctx, sess, r, p.verified)
	case control.OpLeave:
		err := s.cfg.Store.RemoveMember(ctx, r.Network, sess.key[:])
		if errors.Is(err, store.ErrNotMember) || errors.Is(err, store.ErrNotFound) {
			return &control.Error{Code: control.CodeNotMember, Message: fmt.Sprintf("not a member of network %q", r.Network)}
		}
		return err
	}
	return &control.Error{Code: control.CodeInvalid, Message: "unknown operation"}
}

// join adds sess's node to a network: unless it is banned, the network is locked, the password is
// wrong or a limit is reached; a network that needs approval records the join as pending and
// answers CodePending. A member joining again changes nothing. verified is the password hash that
// prepare found r's password to match; the password is checked again only if it changed since.
func (s *Server) join(ctx context.Context, sess *session, r *control.Request, verified string) error {
	n, err := s.cfg.Store.Network(ctx, r.Network)
	if errors.Is(err, store.ErrNotFound) {
		return &control.Error{Code: control.CodeNotFound, Message: fmt.Sprintf("network %q does not exist", r.Network)}
	}
	if err != nil {
		return err
	}
	if n.Approval {
		s.expireJoins(ctx) // an expired request of this node's is made anew
	}
	member, pending, banned, err := s.cfg.Store.Standing(ctx, r.Network, sess.key[:])
	switch {
	case err != nil:
		return err
	case member:
		return nil
	case banned:
		sess.log.Info("join refused: banned", "network", r.Network)
		return &control.Error{Code: control.CodeBanned, Message: fmt.Sprintf("the owner of network %q banned this node", r.Network)}
	case n.Locked:
		return &control.Error{Code: control.CodeLocked, Message: fmt.Sprintf("network %q is locked by its owner: it takes no new members", r.Network)}
	}
	if n.PasswordHash == "" && !n.Approval && !n.Open {
		sess.log.Info("join refused: network closed", "network", r.Network)
		return &control.Error{Code: control.CodeClosed, Message: fmt.Sprintf(
			"network %q takes no joins: it has no password, needs no approval and its owner has not opened it (auth keys still join)", r.Network)}
	}
	if n.PasswordHash != "" && n.PasswordHash != verified {
		if err := s.checkPassword(ctx, sess, r, n.PasswordHash); err != nil {
			return err
		}
	}
	if err := s.checkLimits(ctx, r.Network, sess.key[:]); err != nil {
		return err
	}
	if n.Approval && !bytes.Equal(n.Owner, sess.key[:]) {
		if !pending {
			source := s.pendingSource(sess)
			if err := s.checkPending(ctx, r.Network, sess.key[:], source); err != nil {
				return err
			}
			if err := s.cfg.Store.AddJoinRequest(ctx, r.Network, sess.key[:], source, s.now()); err != nil {
				return err
			}
			sess.log.Info("join awaits the owner's approval", "network", r.Network)
			s.pushJoins(ctx, n.Owner)
		}
		return &control.Error{Code: control.CodePending,
			Message: fmt.Sprintf("network %q needs its owner's approval: the join request is recorded, and this node becomes a member once the owner approves it", r.Network)}
	}
	return nameTaken(s.cfg.Store.AddMember(ctx, r.Network, sess.key[:]))
}

// createAccess refuses to create a network that anyone could join by naming it, unless the request
// says so (Open), and an open network with a password or approval (a contradiction).
func createAccess(r *control.Request) error {
	switch {
	case r.Open && (r.Password != "" || r.Approval):
		return &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf(
			"network %q: an open network takes anyone; give --open, or a password or --approval, not both", r.Network)}
	case !r.Open && r.Password == "" && !r.Approval:
		return unprotected(r.Network, "create it")
	}
	return nil
}

// unprotected refuses to leave a network with neither a password nor approval without Open.
func unprotected(network, what string) error {
	return &control.Error{Code: control.CodeUnprotected, Message: fmt.Sprintf(
		"network %q would take anyone who names it: give it a password (--password), make joins wait for the owner's approval (--approval), or %s with --open to make it open on purpose",
		network, what)}
}

// Bounds on joins waiting for approval: throwaway keys must not grow a network's roster (loaded for
// every owner action) without end, nor one node queue up everywhere, nor one source (an IPv4
// address, an IPv6 /64: where throwaway keys come from) fill a network's queue or everyone's.
const (
	maxPendingPerNetwork         = 256
	maxPendingPerNode            = 16
	maxPendingPerSourceInNetwork = 16
	maxPendingPerSource          = 64
)

// checkPending refuses a new pending join beyond those bounds; source is the join's source range
// ("" = not counted per source). The caller holds changeMu.
func (s *Server) checkPending(ctx context.Context, network string, key []byte, source string) error {
	inNetwork, ofNode, err := s.cfg.Store.CountPending(ctx, network, key)
	switch {
	case err != nil:
		return s.storeError("count pending joins", err)
	case inNetwork >= maxPendingPerNetwork:
		return &control.Error{Code: control.CodeNetworkFull, Message: fmt.Sprintf(
			"network %q has %d join requests waiting for its owner's approval; try again once the owner has dealt with them", network, inNetwork)}
	case ofNode >= maxPendingPerNode:
		return &control.Error{Code: control.CodeTooManyNetworks, Message: fmt.Sprintf(
			"this node already waits for approval in %d networks", ofNode)}
	case source == "":
		return nil
	}
	fromInNetwork, fromAll, err := s.cfg.Store.CountPendingFrom(ctx, network, source)
	switch {
	case err != nil:
		return s.storeError("count pending joins", err)
	case fromInNetwork >= maxPendingPerSourceInNetwork:
		return &control.Error{Code: control.CodeTooManyRequests, Message: fmt.Sprintf(
			"%d join requests from this address already wait for the approval of network %q's owner", fromInNetwork, network)}
	case fromAll >= maxPendingPerSource:
		return &control.Error{Code: control.CodeTooManyRequests, Message: fmt.Sprintf(
			"%d join requests from this address already wait for approval", fromAll)}
	}
	return nil
}

// failed turns an error into a reply; store failures are logged and reported without details.
func (s *Server) failed(id uint64, err error) *control.Reply {
	var cerr *control.Error
	if !errors.As(err, &cerr) {
		cerr = s.storeError("network request", err).(*control.Error)
		s.log.Error("request failed", "error", err)
	}
	return &control.Reply{ID: id, Code: cerr.Code, Error: cerr.Message}
}

func (s *Server) peerSet(ctx context.Context, key nodeKey) (map[nodeKey]bool, error) {
	rows, err := s.cfg.Store.Peers(ctx, key[:])
	if err != nil {
		return nil, err
	}
	set := make(map[nodeKey]bool, len(rows))
	for _, r := range rows {
		set[keyOf(r.Node.Key)] = true
	}
	return set, nil
}

// refreshPeers recomputes what node x and each of its peers see of each other after a change, and
// queues the differences: upserts for every pair that shares a network, removals for pairs in before
// that no longer do. The caller holds changeMu.
func (s *Server) refreshPeers(x nodeKey, before map[nodeKey]bool) error {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	me, err := s.cfg.Store.Node(ctx, x[:])
	if err != nil {
		return err
	}
	rows, err := s.cfg.Store.Peers(ctx, x[:])
	if err != nil {
		return err
	}
	now := make(map[nodeKey]bool, len(rows))
	for _, r := range rows {
		k := keyOf(r.Node.Key)
		now[k] = true
		theirs := s.peerRecord(r.Node, r.Networks)
		mine := s.peerRecord(me, r.Networks)
		s.enqueue(x, k, &theirs)
		s.enqueue(k, x, &mine)
	}
	for k := range before {
		if !now[k] {
			s.enqueue(x, k, nil)
			s.enqueue(k, x, nil)
		}
	}
	s.publish("", store.EventNode, x[:]) // the same for the nodes on other coords (cluster.go)
	return nil
}
