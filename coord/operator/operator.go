// Package operator performs the coordination server operator's commands — listings of nodes,
// networks, auth keys, blocks and the audit log; creating and revoking auth keys; adding and removing
// blocks; removing nodes — and serves them on the admin socket in the data directory (socket.go).
//
// The same Commands runs inside the server (with Config.Server set: it knows who is online, and node
// removals and blocks take effect at once) and in the warren-coord command on the data directory
// directly when no server runs. Every operation that changes something is written to the store's
// audit log. Request and result types are in package operatorapi. It does not parse flags or print.
package operator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// Config configures a Commands.
type Config struct {
	// Store is the server's database. Required.
	Store *store.Store
	// Server is the running server; nil = no server runs (online state unknown, changes apply when
	// one starts).
	Server *coord.Server
	// BlockFile is the block list file to use without a Server ("" = the one the server recorded
	// in the database, else DefaultBlockFile). With a Server, the server's own file is used.
	BlockFile        string
	DefaultBlockFile string
	// Logger; nil = silent.
	Logger hclog.Logger
}

// Commands performs operator commands. It is safe for concurrent use.
type Commands struct {
	cfg Config
	log hclog.Logger
	ops map[operatorapi.Op]opFunc
}

// opFunc performs one operation for actor (see store.OperatorActor) and returns its result.
type opFunc func(ctx context.Context, actor string, r *operatorapi.Request) (any, error)

// New returns a Commands for cfg.
func New(cfg Config) *Commands {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	a := &Commands{cfg: cfg, log: cfg.Logger}
	a.ops = map[operatorapi.Op]opFunc{
		operatorapi.OpNodes:         a.nodes,
		operatorapi.OpNetworks:      a.networks,
		operatorapi.OpAuthKeys:      a.authKeys,
		operatorapi.OpBlocks:        a.blocks,
		operatorapi.OpAudit:         a.auditLog,
		operatorapi.OpRelays:        a.relays,
		operatorapi.OpAuthKeyCreate: a.createAuthKey,
		operatorapi.OpAuthKeyRevoke: a.revokeAuthKey,
		operatorapi.OpBlockAdd:      a.addBlock,
		operatorapi.OpBlockRemove:   a.removeBlock,
		operatorapi.OpNodeRemove:    a.removeNode,
		operatorapi.OpNetwork:       a.networkAction,
	}
	return a
}

// Live reports whether the Commands works through a running server.
func (a *Commands) Live() bool { return a.cfg.Server != nil }

// Do validates and performs r for actor. Refusals are *operatorapi.Error; other errors are internal.
func (a *Commands) Do(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	if err := r.Validate(); err != nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "%v", err)
	}
	op := a.ops[r.Op]
	if op == nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "operation %q is not available here", r.Op)
	}
	return op(ctx, actor, r)
}

// audit records a change. The change is done even if recording it fails; the error says so.
func (a *Commands) audit(ctx context.Context, actor string, action operatorapi.Op, target, detail string) error {
	err := a.cfg.Store.Audit(ctx, store.AuditEntry{Actor: actor, Action: string(action), Target: target, Detail: detail})
	if err != nil {
		a.log.Error("audit log write failed", "action", action, "target", target, "error", err)
		return fmt.Errorf("%s %s was done, but writing the audit log failed: %w", action, target, err)
	}
	a.log.Info("operator action", "actor", actor, "action", action, "target", target, "detail", detail)
	return nil
}

func (a *Commands) nodes(ctx context.Context, _ string, _ *operatorapi.Request) (any, error) {
	infos, err := a.cfg.Store.AllNodes(ctx)
	if err != nil {
		return nil, err
	}
	var online map[string]coord.OnlineNode
	if a.cfg.Server != nil {
		online = a.cfg.Server.Online()
	}
	now := time.Now().UTC()
	out := make([]operatorapi.Node, 0, len(infos))
	for _, in := range infos {
		n := nodeView(in.Node, in.Networks)
		n.LastSeen = in.LastSeen
		if !in.OfflineSince.IsZero() {
			n.LastSeen = in.OfflineSince
		}
		if online != nil {
			o, ok := online[string(in.Key)]
			n.Online = &ok
			if ok {
				n.Observed = o.Observed.String()
				since := o.Since.UTC()
				n.OnlineSince = &since
				n.LastSeen = now
			}
		}
		out = append(out, n)
	}
	return out, nil
}

func nodeView(n store.Node, networks []string) operatorapi.Node {
	if networks == nil {
		networks = []string{}
	}
	return operatorapi.Node{Name: n.Name, Key: identity.ShortID(n.Key), Fingerprint: identity.Fingerprint(ed25519.PublicKey(n.Key)),
		IPs: []netip.Addr{n.IPv4, n.IPv6}, LastSeen: n.LastSeen, Networks: networks, Ephemeral: n.Ephemeral, Tag: n.Tag,
		AuthKey: n.AuthKeyID, CreatedAt: n.CreatedAt}
}

func (a *Commands) networks(ctx context.Context, _ string, _ *operatorapi.Request) (any, error) {
	nets, err := a.cfg.Store.AllNetworks(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := a.cfg.Store.AllNodes(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(nodes))
	for _, n := range nodes {
		names[string(n.Key)] = n.Name
	}
	var online map[string]coord.OnlineNode
	if a.cfg.Server != nil {
		online = a.cfg.Server.Online()
	}
	out := make([]operatorapi.Network, 0, len(nets))
	for _, n := range nets {
		v := operatorapi.Network{Name: n.Name, Owner: identity.ShortID(n.Owner), OwnerName: names[string(n.Owner)],
			Members: len(n.Members), Password: n.PasswordHash != "", CreatedAt: n.CreatedAt}
		if online != nil {
			count := 0
			for _, k := range n.Members {
				if _, ok := online[string(k)]; ok {
					count++
				}
			}
			v.Online = &count
		}
		out = append(out, v)
	}
	return out, nil
}

func (a *Commands) relays(context.Context, string, *operatorapi.Request) (any, error) {
	srv := a.cfg.Server
	if srv == nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "relays: no server runs on this data directory (relays are a running server's)")
	}
	load := srv.Relays()
	out := []operatorapi.Relay{}
	if load.Own {
		bound := load.Bound
		out = append(out, operatorapi.Relay{Kind: "coord", Addr: srv.Addr().String(), Key: srv.Fingerprint(), Nodes: &bound})
	}
	for _, r := range load.Standalone {
		out = append(out, operatorapi.Relay{Kind: "standalone", Addr: r.Addr.String(), Key: r.Key})
	}
	return out, nil
}

func (a *Commands) authKeys(ctx context.Context, _ string, _ *operatorapi.Request) (any, error) {
	keys, err := a.cfg.Store.AuthKeys(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]operatorapi.AuthKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyView(k, now))
	}
	return out, nil
}

func keyView(k store.AuthKey, now time.Time) operatorapi.AuthKey {
	return operatorapi.AuthKey{ID: k.ID, Network: k.Network, State: k.State(now), Reusable: k.Reusable, Ephemeral: k.Ephemeral,
		Tag: k.Tag, Uses: k.Uses, CreatedAt: k.CreatedAt, ExpiresAt: timeOrNil(k.ExpiresAt), RevokedAt: timeOrNil(k.RevokedAt),
		LastUsedAt: timeOrNil(k.LastUsedAt)}
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *Commands) createAuthKey(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	if r.Network == "" {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "the network is required")
	}
	if err := store.ValidNetworkName(r.Network); err != nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "%v", err)
	}
	if r.Tag != "" {
		if err := store.ValidTag(r.Tag); err != nil {
			return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "%v", err)
		}
	}
	k, secret, err := a.cfg.Store.CreateAuthKey(ctx, store.AuthKeyOptions{Network: r.Network, Reusable: r.Reusable,
		Ephemeral: r.Ephemeral, Tag: r.Tag, Expiry: time.Duration(r.ExpirySeconds) * time.Second})
	if errors.Is(err, store.ErrNotFound) {
		return nil, operatorapi.Errorf(operatorapi.CodeNotFound, "network %q does not exist (a node creates it: warren network create %s)", r.Network, r.Network)
	}
	if err != nil {
		return nil, err
	}
	view := keyView(k, time.Now())
	if err := a.audit(ctx, actor, r.Op, k.ID, "network "+view.Network+", "+DescribeKey(view)); err != nil {
		return nil, err
	}
	return operatorapi.NewAuthKey{AuthKey: view, Secret: secret}, nil
}

// DescribeKey sums up what a key does in one line: "single-use, ephemeral, tag ci, expires ...".
// The audit log and warren-coord authkey create both say it.
func DescribeKey(k operatorapi.AuthKey) string {
	parts := []string{"single-use"}
	if k.Reusable {
		parts[0] = "reusable"
	}
	if k.Ephemeral {
		parts = append(parts, "ephemeral")
	}
	if k.Tag != "" {
		parts = append(parts, "tag "+k.Tag)
	}
	if k.ExpiresAt == nil {
		parts = append(parts, "never expires")
	} else {
		parts = append(parts, "expires "+k.ExpiresAt.Format(time.RFC3339))
	}
	return strings.Join(parts, ", ")
}

func (a *Commands) revokeAuthKey(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	err := a.cfg.Store.RevokeAuthKey(ctx, r.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, operatorapi.Errorf(operatorapi.CodeNotFound, "no auth key with ID %q ('warren-coord authkey list' shows them)", r.ID)
	}
	if err != nil {
		return nil, err
	}
	keys, err := a.cfg.Store.AuthKeys(ctx)
	if err != nil {
		return nil, err
	}
	var view operatorapi.AuthKey
	for _, k := range keys {
		if k.ID == r.ID {
			view = keyView(k, time.Now())
		}
	}
	if err := a.audit(ctx, actor, r.Op, r.ID, "network "+view.Network); err != nil {
		return nil, err
	}
	return view, nil
}

// blockFile returns the block list file in use.
func (a *Commands) blockFile(ctx context.Context) (string, error) {
	if a.cfg.Server != nil {
		if f := a.cfg.Server.BlockListFile(); f != "" {
			return f, nil
		}
		return "", operatorapi.Errorf(operatorapi.CodeInvalid, "the running server has no block list file")
	}
	if a.cfg.BlockFile != "" {
		return a.cfg.BlockFile, nil
	}
	if f, ok, err := a.cfg.Store.Setting(ctx, SettingBlockFile); err != nil {
		return "", err
	} else if ok && f != "" {
		return f, nil
	}
	if a.cfg.DefaultBlockFile != "" {
		return a.cfg.DefaultBlockFile, nil
	}
	return "", operatorapi.Errorf(operatorapi.CodeInvalid, "no block list file known: pass --blocklist FILE")
}

// SettingBlockFile is the store setting under which the server records its block list file, so
// that commands on the data directory edit the same file.
const SettingBlockFile = "blocklist"

func (a *Commands) blocks(ctx context.Context, _ string, _ *operatorapi.Request) (any, error) {
	file, err := a.blockFile(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := abuse.ReadBlockFile(file)
	if err != nil {
		return nil, err
	}
	out := operatorapi.Blocks{File: file, Entries: make([]operatorapi.BlockEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, operatorapi.BlockEntry{Prefix: e.Prefix.String(), Comment: e.Comment})
	}
	return out, nil
}

func (a *Commands) addBlock(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	return a.changeBlock(ctx, actor, r, true)
}

func (a *Commands) removeBlock(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	return a.changeBlock(ctx, actor, r, false)
}

func (a *Commands) changeBlock(ctx context.Context, actor string, r *operatorapi.Request, add bool) (any, error) {
	p, err := abuse.ParseBlockPrefix(strings.TrimSpace(r.Prefix))
	if err != nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "%v", err)
	}
	file, err := a.blockFile(ctx)
	if err != nil {
		return nil, err
	}
	res := operatorapi.BlockChange{File: file, Prefix: p.String(), Changed: true, Disconnected: []string{}}
	if add {
		res.Changed, err = abuse.AddBlock(file, p, r.Comment)
	} else if err = abuse.RemoveBlock(file, p); errors.Is(err, abuse.ErrNotBlocked) {
		return nil, operatorapi.Errorf(operatorapi.CodeNotFound, "%v is not an entry of the block list %s", p, file)
	}
	if err != nil {
		return nil, err
	}
	if srv := a.cfg.Server; srv != nil {
		var victims []string
		if add && res.Changed {
			victims, err = a.onlineIn(ctx, p)
			if err != nil {
				return nil, err
			}
		}
		if err := srv.ReloadBlockList(); err != nil {
			return nil, fmt.Errorf("the block list %s changed, but the server could not load it: %w", file, err)
		}
		res.Applied, res.Disconnected = true, victims
	}
	if !res.Changed {
		return res, nil
	}
	detail := r.Comment
	if len(res.Disconnected) > 0 {
		detail = strings.TrimSpace(detail + "; disconnected " + strings.Join(res.Disconnected, ", "))
	}
	if err := a.audit(ctx, actor, r.Op, p.String(), detail); err != nil {
		return nil, err
	}
	return res, nil
}

// onlineIn names the online nodes whose control connection comes from p.
func (a *Commands) onlineIn(ctx context.Context, p netip.Prefix) ([]string, error) {
	var keys []string
	for k, o := range a.cfg.Server.Online() {
		if p.Contains(o.Observed.Addr().Unmap()) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return []string{}, nil
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		n, err := a.cfg.Store.Node(ctx, []byte(k))
		if err != nil {
			out = append(out, identity.ShortID([]byte(k)))
			continue
		}
		out = append(out, identity.Label(n.Name, n.Key))
	}
	return out, nil
}

func (a *Commands) removeNode(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	n, err := a.findNode(ctx, r.Node)
	if err != nil {
		return nil, err
	}
	res := operatorapi.RemovedNode{Node: nodeView(n.Node, n.Networks), Live: a.cfg.Server != nil}
	if srv := a.cfg.Server; srv != nil {
		rm, err := srv.RemoveNode(ctx, n.Key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, operatorapi.Errorf(operatorapi.CodeNotFound, "node %s was removed meanwhile", r.Node)
		}
		if err != nil {
			return nil, err
		}
		res.WasOnline, res.PeersTold = rm.WasOnline, rm.PeersTold
	} else if ok, err := a.cfg.Store.DeleteNode(ctx, n.Key); err != nil {
		return nil, err
	} else if !ok {
		return nil, operatorapi.Errorf(operatorapi.CodeNotFound, "node %s was removed meanwhile", r.Node)
	}
	detail := fmt.Sprintf("key %s, %v, networks [%s]", res.Node.Key, n.IPv4, strings.Join(n.Networks, " "))
	if res.Live {
		detail += fmt.Sprintf(", was online %v, %d peers told", res.WasOnline, res.PeersTold)
	} else {
		detail += ", on the data directory (no server running)"
	}
	if err := a.audit(ctx, actor, r.Op, identity.Label(n.Name, n.Key), detail); err != nil {
		return nil, err
	}
	return res, nil
}

// findNode resolves a node given as a name, a short key or a fingerprint.
func (a *Commands) findNode(ctx context.Context, s string) (store.NodeInfo, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return store.NodeInfo{}, operatorapi.Errorf(operatorapi.CodeInvalid, "which node? give its name, short key or fingerprint")
	}
	fp, fpErr := identity.ParseFingerprint(s)
	nodes, err := a.cfg.Store.AllNodes(ctx)
	if err != nil {
		return store.NodeInfo{}, err
	}
	var byName []store.NodeInfo
	for _, n := range nodes {
		if identity.ShortID(n.Key) == s || (fpErr == nil && identity.Fingerprint(ed25519.PublicKey(n.Key)) == fp) {
			return n, nil
		}
		if n.Name == s {
			byName = append(byName, n)
		}
	}
	switch len(byName) {
	case 0:
		return store.NodeInfo{}, operatorapi.Errorf(operatorapi.CodeNotFound, "no node named %q or with that key ('warren-coord nodes' lists them)", s)
	case 1:
		return byName[0], nil
	}
	keys := make([]string, 0, len(byName))
	for _, n := range byName {
		keys = append(keys, identity.ShortID(n.Key))
	}
	return store.NodeInfo{}, operatorapi.Errorf(operatorapi.CodeAmbiguous, "%d nodes are named %q; give one's key: %s", len(byName), s, strings.Join(keys, ", "))
}

func (a *Commands) auditLog(ctx context.Context, _ string, r *operatorapi.Request) (any, error) {
	var since time.Time
	if r.Since > 0 {
		since = time.Unix(r.Since, 0)
	}
	limit := r.Limit
	if limit == 0 {
		limit = operatorapi.MaxAuditRead
	}
	entries, err := a.cfg.Store.AuditLog(ctx, since, limit)
	if err != nil {
		return nil, err
	}
	out := make([]operatorapi.AuditEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, operatorapi.AuditEntry{ID: e.ID, Time: e.Time, Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	return out, nil
}

// networkAction takes an owner action on any network with the operator's authority, through the
// running server (which tells the members and writes the audit log).
func (a *Commands) networkAction(ctx context.Context, actor string, r *operatorapi.Request) (any, error) {
	if a.cfg.Server == nil {
		return nil, operatorapi.Errorf(operatorapi.CodeInvalid, "network %s needs the running server, which tells the members: start warren-coord first", r.Action)
	}
	res, err := a.cfg.Server.Owner(ctx, coord.OwnerRequest{By: coord.Actor{Operator: true, OperatorName: actor},
		Op: control.Op(r.Action), Network: r.Network, Target: r.Node})
	var cerr *control.Error
	if errors.As(err, &cerr) {
		code := operatorapi.CodeInvalid
		switch cerr.Code {
		case control.CodeNotFound, control.CodeNotMember:
			code = operatorapi.CodeNotFound
		case control.CodeInternal:
			code = operatorapi.CodeInternal
		}
		return nil, operatorapi.Errorf(code, "network %s %s: %s", r.Action, r.Network, cerr.Message)
	}
	if err != nil {
		return nil, err
	}
	return operatorapi.NetworkResult{Action: r.Action, Network: r.Network, Node: res.Target}, nil
}
