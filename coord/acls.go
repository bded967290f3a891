package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// Access rules (ACLs): a network's owner sets or clears its rule list; members may read it. The
// server stores the list (checked with package acl) and pushes every change to the network's online
// members in a PeerDelta, and the whole set of a node's lists in its PeerMap at login. Nodes enforce
// them on what they receive; the server does not look at overlay traffic.

const (
	// maxACLBytes bounds one network's rule list as stored and sent, so that the lists of every
	// network a node may be in (control.MaxNetworks) fit in the control protocol's frames.
	maxACLBytes = 8 << 10
)

func isACLOp(op control.Op) bool {
	return op == control.OpACLSet || op == control.OpACLClear || op == control.OpACLShow
}

// handleACL serves OpACLSet, OpACLClear and OpACLShow.
func (s *Server) handleACL(sess *session, r *control.Request) *control.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	a, err := s.applyACL(ctx, sess, r)
	if err != nil {
		return s.failed(r.ID, err)
	}
	if r.Op != control.OpACLShow {
		sess.log.Info("network rules changed", "op", r.Op, "network", r.Network, "rules", len(a.Rules))
		s.audit(store.AuditEntry{Actor: store.NodeActor(sess.key[:]), Action: "network." + string(r.Op),
			Target: r.Network, Detail: fmt.Sprintf("%d rules", len(a.Rules))})
	}
	return &control.Reply{ID: r.ID, ACL: a}
}

func (s *Server) applyACL(ctx context.Context, sess *session, r *control.Request) (*control.ACL, error) {
	if err := store.ValidNetworkName(r.Network); err != nil {
		return nil, &control.Error{Code: control.CodeInvalid, Message: err.Error()}
	}
	n, err := s.cfg.Store.Network(ctx, r.Network)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &control.Error{Code: control.CodeNotFound, Message: fmt.Sprintf("network %q does not exist", r.Network)}
	}
	if err != nil {
		return nil, err
	}
	owner := string(n.Owner) == string(sess.key[:])
	if r.Op == control.OpACLShow {
		nets, err := s.cfg.Store.NetworksOf(ctx, sess.key[:])
		if err != nil {
			return nil, err
		}
		if !owner && !slices.Contains(nets, r.Network) {
			return nil, &control.Error{Code: control.CodeNotMember, Message: fmt.Sprintf("not a member of network %q", r.Network)}
		}
		return s.loadACL(ctx, r.Network)
	}
	if !owner {
		sess.log.Info("rule change refused: not the owner", "network", r.Network)
		return nil, &control.Error{Code: control.CodeNotOwner, Message: fmt.Sprintf("only the owner of network %q can change its rules", r.Network)}
	}
	a := &control.ACL{Network: r.Network, Rules: []control.ACLRule{}}
	if r.Op == control.OpACLClear {
		err = s.cfg.Store.ClearACL(ctx, r.Network)
	} else {
		if _, err := acl.Compile(r.Rules); err != nil {
			return nil, &control.Error{Code: control.CodeInvalid, Message: "invalid rules: " + err.Error()}
		}
		b, err := json.Marshal(r.Rules)
		if err != nil {
			return nil, err
		}
		if len(b) > maxACLBytes {
			return nil, &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf("rules too large: %d bytes, at most %d", len(b), maxACLBytes)}
		}
		a.Rules = r.Rules
		err = s.cfg.Store.SetACL(ctx, r.Network, string(b))
	}
	if err != nil {
		return nil, err
	}
	members, err := s.cfg.Store.Members(ctx, r.Network)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		s.enqueueACL(keyOf(m.Key), *a)
	}
	return a, nil
}

// loadACL returns a network's rule list (no rules if it has none).
func (s *Server) loadACL(ctx context.Context, network string) (*control.ACL, error) {
	a := &control.ACL{Network: network, Rules: []control.ACLRule{}}
	text, err := s.cfg.Store.ACL(ctx, network)
	if err != nil || text == "" {
		return a, err
	}
	if err := json.Unmarshal([]byte(text), &a.Rules); err != nil {
		return nil, fmt.Errorf("rules of %q: %w", network, err)
	}
	return a, nil
}

// aclsOf returns the rule lists of the node's networks that have one, sorted by network. A stored
// list that no longer decodes is sent as a rule that matches nobody: nodes then refuse everything
// that network alone would allow, rather than fall back to the default.
func (s *Server) aclsOf(ctx context.Context, key nodeKey) ([]control.ACL, error) {
	m, err := s.cfg.Store.ACLsOf(ctx, key[:])
	if err != nil {
		return nil, err
	}
	out := make([]control.ACL, 0, len(m))
	for network, text := range m {
		a := control.ACL{Network: network}
		if err := json.Unmarshal([]byte(text), &a.Rules); err != nil || len(a.Rules) == 0 {
			s.log.Error("stored rules do not decode; denying by default", "network", network, "error", err)
			a.Rules = []control.ACLRule{{From: []string{"tag:unreadable-rules"}, To: []string{"tag:unreadable-rules"}, Ports: []string{"icmp"}}}
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b control.ACL) int { return strings.Compare(a.Network, b.Network) })
	return out, nil
}

// pushACL queues, for node x, the rule list of network as x may see it now: the network's rules if
// x is a member, none otherwise (x left it). The caller holds changeMu.
func (s *Server) pushACL(ctx context.Context, x nodeKey, network string) error {
	nets, err := s.cfg.Store.NetworksOf(ctx, x[:])
	if err != nil {
		return err
	}
	a := &control.ACL{Network: network, Rules: []control.ACLRule{}}
	if slices.Contains(nets, network) {
		if a, err = s.loadACL(ctx, network); err != nil {
			return err
		}
	}
	s.enqueueACL(x, *a)
	return nil
}

// enqueueACL queues a rule-list change for the node `to`, if it is online. The latest per network wins.
func (s *Server) enqueueACL(to nodeKey, a control.ACL) {
	s.mu.Lock()
	sess := s.sessions[to]
	s.mu.Unlock()
	if sess == nil {
		return
	}
	sess.mu.Lock()
	sess.acls[a.Network] = a
	sess.mu.Unlock()
	poke(sess.wake)
}
