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
	"github.com/warren-net/warren/identity"
)

// Access rules (ACLs): a network's owner sets or clears its rule list; members may read it. The
// server stores the list (checked with package acl) and pushes every change to the network's online
// members in a PeerDelta, and the whole set of a node's lists in its PeerMap at login. Nodes enforce
// them on what they receive; the server does not look at overlay traffic.
//
// Rules name nodes, but grants belong to keys: the server binds every name in a rule to the key of
// the member that has it (names are unique in a network) and stores and sends the key form
// (acl.KeyEntry). It binds when the rules are set, and a name no member had then when a member with
// it first shows up (bindACL: at a join, a login, a rename, a show). A bound rule follows its node
// through renames, and a node that later takes a freed name gets nothing from it. Owners see names:
// show renders each key as the name of the member that has it, or leaves key:SHA256:... for a key
// that is no longer a member (set accepts that form back, so show → edit → set keeps the binding).

const (
	// maxACLBytes bounds one network's rule list as stored and sent, so that the lists of every
	// network a node may be in (control.MaxNetworks) fit in the control protocol's frames.
	maxACLBytes = 8 << 10
	// keyEntryLen is the length of a name bound to a key (acl.KeyEntry of a fingerprint).
	keyEntryLen = len("key:SHA256:") + 43
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
		s.audit(store.AuditEntry{Actor: store.NodeActor(sess.nodeName(), sess.key[:]), Action: "network." + string(r.Op),
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
		a, err := s.bindACL(ctx, r.Network)
		if err != nil {
			return nil, err
		}
		return s.showACL(ctx, r.Network, a)
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
		if n := boundSize(r.Rules); n > maxACLBytes {
			return nil, &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf(
				"rules too large: %d bytes with every node name bound to a key (%d bytes each), at most %d", n, keyEntryLen, maxACLBytes)}
		}
		members, err := s.cfg.Store.Members(ctx, r.Network)
		if err != nil {
			return nil, err
		}
		a.Rules, _ = bindNames(r.Rules, members)
		b, err := json.Marshal(a.Rules)
		if err != nil {
			return nil, err
		}
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
	s.publish(r.Network, store.EventACL, nil)
	return s.showACL(ctx, r.Network, a)
}

// boundSize is the size of rules as stored once every node name in them is bound to a key, which
// bounds what binding may add later.
func boundSize(rules []control.ACLRule) int {
	n := 0
	for _, r := range rules {
		n += len(`{"from":[],"to":[],"ports":[]},`)
		for _, e := range slices.Concat(r.From, r.To) {
			if _, isName := acl.EntryName(e); isName {
				e = strings.Repeat("k", keyEntryLen)
			}
			n += len(e) + len(`"",`)
		}
		for _, e := range r.Ports {
			n += len(e) + len(`"",`)
		}
	}
	return n
}

// bindNames returns rules with every node name that a member has replaced by that member's key,
// and whether it replaced any. Names are unique among members; should an older server have let a
// duplicate in, the name stays unbound (nodes match it to nobody while two peers claim it).
func bindNames(rules []control.ACLRule, members []store.Node) ([]control.ACLRule, bool) {
	byName := make(map[string]string, len(members))
	for _, m := range members {
		if _, dup := byName[m.Name]; dup {
			byName[m.Name] = ""
			continue
		}
		byName[m.Name] = identity.Fingerprint(m.Key)
	}
	changed := false
	bind := func(list []string) []string {
		out := slices.Clone(list)
		for i, e := range out {
			if name, ok := acl.EntryName(e); ok && byName[name] != "" {
				out[i] = acl.KeyEntry(byName[name])
				changed = true
			}
		}
		return out
	}
	out := make([]control.ACLRule, len(rules))
	for i, r := range rules {
		out[i] = control.ACLRule{From: bind(r.From), To: bind(r.To), Ports: r.Ports}
	}
	return out, changed
}

// bindACL binds the names in network's stored rules that a member now has (see the file comment),
// stores the result and sends it to the members if anything changed, and returns the rules as
// stored. The caller holds changeMu.
func (s *Server) bindACL(ctx context.Context, network string) (*control.ACL, error) {
	a, err := s.loadACL(ctx, network)
	if err != nil || len(a.Rules) == 0 {
		return a, err
	}
	members, err := s.cfg.Store.Members(ctx, network)
	if err != nil {
		return nil, err
	}
	rules, changed := bindNames(a.Rules, members)
	if !changed {
		return a, nil
	}
	b, err := json.Marshal(rules)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.SetACL(ctx, network, string(b)); err != nil {
		return nil, err
	}
	a.Rules = rules
	for _, m := range members {
		s.enqueueACL(keyOf(m.Key), *a)
	}
	s.publish(network, store.EventACL, nil)
	s.log.Info("network rules: names bound to keys", "network", network)
	return a, nil
}

// showACL renders stored rules for people: each key that a member has as that member's name.
func (s *Server) showACL(ctx context.Context, network string, a *control.ACL) (*control.ACL, error) {
	members, err := s.cfg.Store.Members(ctx, network)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(members))
	for _, m := range members {
		names[identity.Fingerprint(m.Key)] = m.Name
	}
	render := func(list []string) []string {
		out := slices.Clone(list)
		for i, e := range out {
			if fp, ok := acl.EntryKey(e); ok && names[fp] != "" {
				out[i] = names[fp]
			}
		}
		return out
	}
	out := &control.ACL{Network: a.Network, Rules: make([]control.ACLRule, len(a.Rules))}
	for i, r := range a.Rules {
		out.Rules[i] = control.ACLRule{From: render(r.From), To: render(r.To), Ports: r.Ports}
	}
	return out, nil
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

// aclsOf returns the rule lists of the node's networks that have one, sorted by network, with the
// names in them bound (bindACL). A stored list that no longer decodes is sent as a rule that matches
// nobody: nodes then refuse everything that network alone would allow, rather than fall back to the
// default. The caller holds changeMu.
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
		} else if bound, err := s.bindACL(ctx, network); err != nil {
			return nil, err
		} else {
			a = *bound
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
		if a, err = s.bindACL(ctx, network); err != nil {
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
	s.wake(sess)
}
