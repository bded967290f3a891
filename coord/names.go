package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// Node names are identities (NAME.warren, access rules), so they are unique among the nodes that
// share a network and stable: a node keeps the name of its first login, and a later login under
// another --name does not rename it (the node is told its name in Welcome.Name and goes by it).
// Renaming is an explicit request, OpRename; a clash is refused with CodeNameTaken (at a join, an
// approval, an auth key's join or a rename), never resolved by a silent suffix: a node that
// answers to another name than the one its user gave would be a surprise in every rule and URL.

// nameTaken turns a store.NameTakenError into the answer a node's user sees; other errors pass.
func nameTaken(err error) error {
	var nt *store.NameTakenError
	if !errors.As(err, &nt) {
		return err
	}
	return &control.Error{Code: control.CodeNameTaken, Message: fmt.Sprintf(
		"another node in network %q is already named %q: names are unique in a network; pick another with `warren rename NEWNAME`",
		nt.Network, nt.Name)}
}

// handleRename serves OpRename: the node takes r.Name, its peers get the new name in a PeerDelta,
// and the rules of its networks stay bound to its key (names in them are bound first, so a rule
// that named the node by its old name keeps applying to it, and one that named the new name before
// anyone had it applies to it from now on).
func (s *Server) handleRename(sess *session, r *control.Request) *control.Reply {
	if err := store.ValidNodeName(r.Name); err != nil {
		return s.failed(r.ID, &control.Error{Code: control.CodeInvalid, Message: err.Error()})
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	old, err := s.cfg.Store.Node(ctx, sess.key[:])
	if err != nil {
		return s.failed(r.ID, err)
	}
	nets, err := s.cfg.Store.NetworksOf(ctx, sess.key[:])
	if err != nil {
		return s.failed(r.ID, err)
	}
	if old.Name != r.Name {
		if err := s.rename(ctx, sess, nets, r.Name); err != nil {
			return s.failed(r.ID, err)
		}
		name := r.Name
		sess.name.Store(&name)
		sess.log.Info("node renamed", "from", old.Name, "to", r.Name)
		s.audit(store.AuditEntry{Actor: store.NodeActor(old.Name, sess.key[:]), Action: "node.rename", Target: identity.Label(r.Name, sess.key[:]), Detail: "was " + old.Name})
	}
	return &control.Reply{ID: r.ID, Name: r.Name, Networks: nonNil(nets)}
}

// rename renames sess's node and tells whoever needs to know. The caller holds changeMu.
func (s *Server) rename(ctx context.Context, sess *session, nets []string, name string) error {
	for _, n := range nets { // the old name, in rules, becomes the key before it is free
		if _, err := s.bindACL(ctx, n); err != nil {
			return err
		}
	}
	if err := s.cfg.Store.RenameNode(ctx, sess.key[:], name); err != nil {
		return nameTaken(err)
	}
	for _, n := range nets {
		if _, err := s.bindACL(ctx, n); err != nil {
			return err
		}
	}
	return s.refreshPeers(sess.key, nil)
}
