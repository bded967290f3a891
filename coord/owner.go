package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// Owner actions. A network's owner (its creator, or whom ownership was transferred to)
// decides who is in it: approve or deny pending joins, kick, ban and unban nodes, lock it against
// new joins, change its password, whether joins need approval, hand it over, delete it. Nodes ask
// with control requests; the server's operator (package coord/operator) calls Owner directly with
// Actor.Operator. Every action, whoever asks, goes through Owner.
//
// Membership changes reach the nodes as usual peer deltas: a kicked node and its former peers
// each get the other removed (unless they still share another network), so the peers close their
// links to it; the node itself also gets its new network list (PeerDelta.Networks).

// Actor is who asks for an owner action.
type Actor struct {
	// Key is the asking node's identity key: it must own the network (except for OpMembers, which
	// any member may list). Ignored with Operator.
	Key []byte
	// Name is the asking node's name, for the log and the audit log.
	Name string
	// Operator is the server's operator: it may act on every network.
	Operator bool
	// OperatorName names the operator in the audit log (store.OperatorActor); "" = "operator".
	OperatorName string
}

// auditName is how the audit log names a.
func (a Actor) auditName() string {
	switch {
	case a.Operator && a.OperatorName != "":
		return a.OperatorName
	case a.Operator:
		return store.OperatorActor(-1)
	}
	return store.NodeActor(a.Name, a.Key)
}

// OwnerRequest is one owner action or listing (control.Op.IsOwnerAction).
type OwnerRequest struct {
	By       Actor
	Op       control.Op
	Network  string
	Target   string // the node acted on: its name, or key fingerprint; see control.Request.Target
	Password string // OpPassword: the new password ("" = none)
	Approval bool   // OpApproval: whether joins need approval
	// Open: with OpPassword (no password) or OpApproval (off), the network is to take anyone; without
	// it the last of a password and approval cannot be taken away (control.CodeUnprotected).
	Open bool
	All  bool // OpDeny without Target: drop every pending join
}

// OwnerResult is what an action did.
type OwnerResult struct {
	Target string // the node acted on, by name ("" if none)
	// targetKey is the key of the node acted on (nil if none): the log and the audit log name it
	// with its name.
	targetKey []byte
	Members   []control.Member // OpMembers and OpPending; OpDeny with All: the requests dropped
}

// Owner performs an owner action or listing. Errors are *control.Error with a code the caller can
// show: CodeNotFound, CodeNotOwner, CodeInvalid, CodeNetworkFull, CodeTooManyNetworks,
// CodeUnprotected (OpPassword, OpApproval: the network would take anyone, and Open was not given), or
// CodeInternal for store failures. It is safe for concurrent use.
func (s *Server) Owner(ctx context.Context, req OwnerRequest) (*OwnerResult, error) {
	res, err := s.owner(ctx, req)
	// The one place every owner action passes: an audit log hooks in here.
	s.logOwner(req, res, err)
	return res, err
}

func (s *Server) logOwner(req OwnerRequest, res *OwnerResult, err error) {
	if req.Op == control.OpMembers || req.Op == control.OpPending {
		return
	}
	by := "operator"
	if !req.By.Operator {
		by = identity.Label(req.By.Name, req.By.Key)
	}
	target := req.Target
	if res != nil && res.Target != "" {
		target = res.Target
		if res.targetKey != nil {
			target = identity.Label(res.Target, res.targetKey)
		}
	}
	if err != nil {
		s.log.Info("owner action refused", "op", req.Op, "network", req.Network, "target", target, "by", by, "error", err)
		return
	}
	s.log.Info("owner action", "op", req.Op, "network", req.Network, "target", target, "by", by)
	s.audit(store.AuditEntry{Actor: req.By.auditName(), Action: "network." + string(req.Op), Target: req.Network, Detail: target})
}

// audit appends e to the audit log; a failure is logged (the action itself is done).
func (s *Server) audit(e store.AuditEntry) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Store.Audit(ctx, e); err != nil {
		s.log.Error("audit log write failed", "action", e.Action, "target", e.Target, "error", err)
	}
}

func (s *Server) owner(ctx context.Context, req OwnerRequest) (*OwnerResult, error) {
	if !req.Op.IsOwnerAction() {
		return nil, &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf("%q is not an owner action", req.Op)}
	}
	if err := store.ValidNetworkName(req.Network); err != nil {
		return nil, &control.Error{Code: control.CodeInvalid, Message: err.Error()}
	}
	if cr := (control.Request{Op: req.Op, Target: req.Target, All: req.All}); !cr.TargetOK() {
		return nil, &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf("%s: name exactly one node", req.Op)}
	}
	if req.Open && req.Op != control.OpPassword && req.Op != control.OpApproval {
		return nil, &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf("%s: open applies to password and approval only", req.Op)}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var hash string // OpPassword: the new password's hash, made before the change lock
	if req.Op == control.OpPassword && req.Password != "" {
		if len(req.Password) > control.MaxPassword {
			return nil, &control.Error{Code: control.CodeInvalid, Message: "password too long"}
		}
		var by []byte // the operator is not rate limited
		if !req.By.Operator {
			by = req.By.Key
		}
		err := s.passwordWork(ctx, by, netip.Addr{}, func() (err error) {
			hash, err = store.HashPassword(req.Password)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()

	n, err := s.cfg.Store.Network(ctx, req.Network)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &control.Error{Code: control.CodeNotFound, Message: fmt.Sprintf("network %q does not exist", req.Network)}
	}
	if err != nil {
		return nil, s.storeError("load network", err)
	}
	owner := req.By.Operator || (len(req.By.Key) > 0 && bytes.Equal(n.Owner, req.By.Key))
	s.expireJoins(ctx) // nobody approves, or sees, an expired request
	roster, err := s.cfg.Store.Roster(ctx, req.Network)
	if err != nil {
		return nil, s.storeError("load roster", err)
	}
	if !owner {
		if req.Op != control.OpMembers || !inRoster(roster, req.By.Key, store.StateMember) {
			return nil, &control.Error{Code: control.CodeNotOwner,
				Message: fmt.Sprintf("only the owner of network %q can %s", req.Network, describeOp(req.Op))}
		}
	}
	res := &OwnerResult{}
	var target store.RosterEntry
	if req.Op.NeedsTarget() && !req.All {
		if target, err = findTarget(roster, req.Network, req.Target); err != nil {
			if target, err = s.formerNode(ctx, req.Op, req.Target, err); err != nil {
				return nil, err
			}
		}
		res.Target, res.targetKey = entryName(target), target.Key
		if bytes.Equal(target.Key, n.Owner) && (req.Op == control.OpKick || req.Op == control.OpBan) {
			return nil, &control.Error{Code: control.CodeInvalid,
				Message: fmt.Sprintf("%s owns network %q: transfer ownership first, or delete the network", res.Target, req.Network)}
		}
	}
	notInState := func(state string) error {
		return &control.Error{Code: control.CodeNotFound, Message: fmt.Sprintf("%s is not %s network %q",
			res.Target, map[string]string{store.StateMember: "a member of", store.StatePending: "waiting to join",
				store.StateBanned: "banned from"}[state], req.Network)}
	}
	st := s.cfg.Store
	switch req.Op {
	case control.OpMembers, control.OpPending:
		res.Members = s.members(roster, n, owner, req.Op == control.OpPending)
	case control.OpApprove:
		if target.State != store.StatePending {
			return nil, notInState(store.StatePending)
		}
		if err := s.checkLimits(ctx, req.Network, target.Key); err != nil {
			return nil, err
		}
		err = s.changeMembership(ctx, [][]byte{target.Key}, func() error {
			if err := nameTaken(st.Approve(ctx, req.Network, target.Key)); err != nil {
				return err
			}
			return s.pushACL(ctx, keyOf(target.Key), req.Network) // the rules, before the peers they apply to
		})
	case control.OpDeny:
		if req.All {
			res.Members = s.members(roster, n, true, true)
			var dropped int
			dropped, err = st.DenyAll(ctx, req.Network)
			res.Target = fmt.Sprintf("all %d pending", dropped) // for the log and the audit
			break
		}
		if target.State != store.StatePending {
			return nil, notInState(store.StatePending)
		}
		_, err = st.RemovePending(ctx, req.Network, target.Key)
	case control.OpKick:
		if target.State != store.StateMember && target.State != store.StatePending {
			return nil, notInState(store.StateMember)
		}
		err = s.changeMembership(ctx, [][]byte{target.Key}, func() error {
			if _, err := st.RemovePending(ctx, req.Network, target.Key); err != nil {
				return err
			}
			if err := st.RemoveMember(ctx, req.Network, target.Key); err != nil && !errors.Is(err, store.ErrNotMember) {
				return err
			}
			return nil
		})
	case control.OpBan:
		err = s.changeMembership(ctx, [][]byte{target.Key}, func() error { return st.Ban(ctx, req.Network, target.Key) })
	case control.OpUnban:
		if target.State != store.StateBanned {
			return nil, notInState(store.StateBanned)
		}
		_, err = st.Unban(ctx, req.Network, target.Key)
	case control.OpLock, control.OpUnlock:
		err = st.SetLocked(ctx, req.Network, req.Op == control.OpLock)
	case control.OpApproval, control.OpPassword:
		err = s.setAccess(ctx, req, n, hash)
	case control.OpTransfer:
		if target.State != store.StateMember {
			return nil, notInState(store.StateMember)
		}
		err = st.SetOwner(ctx, req.Network, target.Key)
	case control.OpDelete:
		var keys [][]byte
		for _, e := range roster {
			if e.State == store.StateMember {
				keys = append(keys, e.Key)
			}
		}
		err = s.changeMembership(ctx, keys, func() error { return st.DeleteNetwork(ctx, req.Network) })
	}
	if err != nil {
		var cerr *control.Error
		if errors.As(err, &cerr) {
			return nil, cerr
		}
		return nil, s.storeError(string(req.Op), err)
	}
	if req.Op != control.OpMembers && req.Op != control.OpPending {
		s.pushJoins(ctx, n.Owner) // its list of join requests may have changed
		if req.Op == control.OpTransfer {
			s.pushJoins(ctx, target.Key)
		}
	}
	return res, nil
}

// setAccess changes a network's password (OpPassword: hash, "" = none) or whether joins need
// approval (OpApproval), and whether it is open: setting a password or approval closes it; taking the
// last of them away needs req.Open and opens it. The steps go in an order whose every intermediate
// state is as closed as the start or the end. The caller holds changeMu.
func (s *Server) setAccess(ctx context.Context, req OwnerRequest, n store.Network, hash string) error {
	st := s.cfg.Store
	password, approval := n.PasswordHash != "", n.Approval
	if req.Op == control.OpPassword {
		password = hash != ""
	} else {
		approval = req.Approval
	}
	switch {
	case req.Open && (password || approval):
		return &control.Error{Code: control.CodeInvalid, Message: fmt.Sprintf(
			"network %q: an open network takes anyone; it cannot also have a password or need approval", req.Network)}
	case !req.Open && !password && !approval:
		what := "remove its password"
		if req.Op == control.OpApproval {
			what = "turn approval off"
		}
		return unprotected(req.Network, what)
	}
	set := func() error {
		if req.Op == control.OpPassword {
			return st.SetPassword(ctx, req.Network, hash)
		}
		return st.SetApproval(ctx, req.Network, req.Approval)
	}
	if req.Open {
		if err := st.SetOpen(ctx, req.Network, true); err != nil {
			return err
		}
		return set()
	}
	if err := set(); err != nil {
		return err
	}
	return st.SetOpen(ctx, req.Network, false)
}

// changeMembership runs change and then tells each node in keys, and everyone it shared or now
// shares a network with, what changed: peer deltas both ways and the node's new network list. The
// caller holds changeMu.
func (s *Server) changeMembership(ctx context.Context, keys [][]byte, change func() error) error {
	before := make([]map[nodeKey]bool, len(keys))
	for i, k := range keys {
		var err error
		if before[i], err = s.peerSet(ctx, keyOf(k)); err != nil {
			return err
		}
	}
	if err := change(); err != nil {
		return err
	}
	for i, k := range keys {
		if _, err := s.cfg.Store.Node(ctx, k); errors.Is(err, store.ErrNotFound) {
			continue // a banned key that is no longer registered
		}
		if err := s.refreshPeers(keyOf(k), before[i]); err != nil {
			return err
		}
		nets, err := s.cfg.Store.NetworksOf(ctx, k)
		if err != nil {
			return err
		}
		s.enqueueNetworks(keyOf(k), nets)
	}
	return nil
}

// limits are the server's membership limits, as the store checks them.
func (s *Server) limits() store.Limits {
	return store.Limits{NetworksPerNode: s.cfg.MaxNetworksPerNode, NodesPerNetwork: s.cfg.MaxNodesPerNetwork}
}

// checkLimits refuses a new membership of key in network ("": any network) beyond the server's
// limits. The caller holds changeMu.
func (s *Server) checkLimits(ctx context.Context, network string, key []byte) error {
	nets, err := s.cfg.Store.CountNetworks(ctx, key)
	if err != nil {
		return s.storeError("count networks", err)
	}
	if nets >= s.cfg.MaxNetworksPerNode {
		return s.limitError(network, store.ErrTooManyNetworks)
	}
	if network == "" {
		return nil
	}
	members, err := s.cfg.Store.CountMembers(ctx, network)
	if err != nil {
		return s.storeError("count members", err)
	}
	if members >= s.cfg.MaxNodesPerNetwork {
		return s.limitError(network, store.ErrNetworkFull)
	}
	return nil
}

// limitError is the answer to a membership beyond a limit (store.ErrTooManyNetworks or
// store.ErrNetworkFull).
func (s *Server) limitError(network string, err error) error {
	if errors.Is(err, store.ErrTooManyNetworks) {
		return &control.Error{Code: control.CodeTooManyNetworks,
			Message: fmt.Sprintf("a node may be in at most %d networks on this server", s.cfg.MaxNetworksPerNode)}
	}
	return &control.Error{Code: control.CodeNetworkFull,
		Message: fmt.Sprintf("network %q is full: at most %d nodes per network on this server", network, s.cfg.MaxNodesPerNetwork)}
}

// members renders a roster; pending joins and bans only for the owner, and with pendingOnly
// nothing else.
func (s *Server) members(roster []store.RosterEntry, n store.Network, owner, pendingOnly bool) []control.Member {
	out := make([]control.Member, 0, len(roster))
	for _, e := range roster {
		if (pendingOnly && e.State != store.StatePending) || (!owner && e.State != store.StateMember) {
			continue
		}
		m := control.Member{Name: entryName(e), Key: identity.Fingerprint(e.Key), State: e.State, Owner: bytes.Equal(e.Key, n.Owner)}
		if e.Node != nil {
			m.IPs = []netip.Addr{e.Node.IPv4, e.Node.IPv6}
		}
		s.mu.Lock()
		m.Online = s.sessions[keyOf(e.Key)] != nil
		s.mu.Unlock()
		out = append(out, m)
		if len(out) == control.MaxPeers {
			break
		}
	}
	return out
}

// findTarget finds the roster entry named by a node name or key fingerprint.
func findTarget(roster []store.RosterEntry, network, target string) (store.RosterEntry, error) {
	var found []store.RosterEntry
	fp, fpErr := identity.ParseFingerprint(target)
	for _, e := range roster {
		if (fpErr == nil && identity.Fingerprint(e.Key) == fp) || (e.Node != nil && e.Node.Name == target) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return store.RosterEntry{}, &control.Error{Code: control.CodeNotFound,
			Message: fmt.Sprintf("no node %q in network %q (members, pending joins and bans)", target, network)}
	}
	fps := make([]string, len(found))
	for i, e := range found {
		fps[i] = identity.Fingerprint(e.Key)
	}
	return store.RosterEntry{}, &control.Error{Code: control.CodeInvalid,
		Message: fmt.Sprintf("%d nodes in network %q are named %q: name one by its key (%s)", len(found), network, target, strings.Join(fps, ", "))}
}

// formerNode lets a ban name, by its key fingerprint, a node that is not in the network's roster
// (kicked, or it left): the fallback when findTarget found none (notFound is its error).
func (s *Server) formerNode(ctx context.Context, op control.Op, target string, notFound error) (store.RosterEntry, error) {
	if op != control.OpBan {
		return store.RosterEntry{}, notFound
	}
	fp, err := identity.ParseFingerprint(target)
	if err != nil {
		if cerr, ok := errors.AsType[*control.Error](notFound); ok && cerr.Code == control.CodeNotFound {
			return store.RosterEntry{}, &control.Error{Code: cerr.Code,
				Message: cerr.Message + "; to ban a node that is no longer in it, name it by its key fingerprint (SHA256:...)"}
		}
		return store.RosterEntry{}, notFound
	}
	n, err := s.cfg.Store.NodeByFingerprint(ctx, fp)
	if errors.Is(err, store.ErrNotFound) {
		return store.RosterEntry{}, notFound
	}
	if err != nil {
		return store.RosterEntry{}, s.storeError("find node", err)
	}
	return store.RosterEntry{Key: n.Key, Node: &n}, nil
}

func inRoster(roster []store.RosterEntry, key []byte, state string) bool {
	for _, e := range roster {
		if e.State == state && bytes.Equal(e.Key, key) {
			return true
		}
	}
	return false
}

// entryName is a roster entry's node name, or its short key ID if the node is no longer registered.
func entryName(e store.RosterEntry) string {
	if e.Node != nil && e.Node.Name != "" {
		return e.Node.Name
	}
	return "key-" + identity.ShortID(e.Key)
}

func describeOp(op control.Op) string {
	switch op {
	case control.OpMembers, control.OpPending:
		return "list its " + string(op)
	case control.OpPassword:
		return "change its password"
	case control.OpApproval:
		return "change whether joins need approval"
	case control.OpDelete, control.OpLock, control.OpUnlock:
		return string(op) + " it"
	}
	return string(op) + " nodes"
}

// ownerRequest answers a node's owner action or listing.
func (s *Server) ownerRequest(sess *session, r *control.Request) *control.Reply {
	res, err := s.Owner(s.ctx, OwnerRequest{By: Actor{Key: sess.key[:], Name: sess.nodeName()}, Op: r.Op, Network: r.Network, Target: r.Target,
		Password: r.Password, Approval: r.Approval, Open: r.Open, All: r.All})
	if err != nil {
		return s.failed(r.ID, err)
	}
	nets, err := s.cfg.Store.NetworksOf(s.ctx, sess.key[:])
	if err != nil {
		return s.failed(r.ID, err)
	}
	return &control.Reply{ID: r.ID, Networks: nonNil(nets), Members: res.Members}
}
