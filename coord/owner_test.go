package coord

import (
	"context"
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

var reqID uint64 = 100

// do sends an owner request and checks the reply's code ("" = success).
// nextID returns a request ID not used before in this test binary.
func nextID() uint64 {
	reqID++
	return reqID
}

func (c *client) do(t *testing.T, want control.Code, r control.Request) *control.Reply {
	t.Helper()
	r.ID = nextID()
	rep := c.request(t, r)
	if rep.Code != want {
		t.Fatalf("%s %s %s: got code %q (%s), want %q", r.Op, r.Network, r.Target, rep.Code, rep.Error, want)
	}
	return rep
}

func networksAre(names ...string) func(*control.PeerDelta) bool {
	return func(d *control.PeerDelta) bool {
		return d.Networks != nil && slices.Equal(d.Networks.Names, names)
	}
}

func memberStates(ms []control.Member) map[string]string {
	out := make(map[string]string)
	for _, m := range ms {
		s := m.State
		if m.Owner {
			s += "+owner"
		}
		out[m.Name] = s
	}
	return out
}

func TestOwnerActions(t *testing.T) {
	srv := startServer(t)
	aliceKey, bobKey := mustKey(t), mustKey(t)
	a, b, c := dialKey(t, srv, aliceKey), dialKey(t, srv, bobKey), dial(t, srv)
	a.login(t, "alice")
	b.login(t, "bob")
	c.login(t, "carol")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Approval: true})

	// A join waits for approval; non-owners cannot approve.
	b.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lan"})
	b.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lan"})
	b.do(t, control.CodeNotOwner, control.Request{Op: control.OpApprove, Network: "lan", Target: "bob"})
	b.do(t, control.CodeNotOwner, control.Request{Op: control.OpMembers, Network: "lan"}) // not a member yet
	rep := a.do(t, "", control.Request{Op: control.OpPending, Network: "lan"})
	if got := memberStates(rep.Members); len(got) != 1 || got["bob"] != "pending" {
		t.Fatalf("pending: %v", got)
	}
	a.do(t, control.CodeNotFound, control.Request{Op: control.OpApprove, Network: "lan", Target: "nobody"})
	a.do(t, "", control.Request{Op: control.OpApprove, Network: "lan", Target: "bob"})
	b.waitDelta(t, "bob told of its new network", networksAre("lan"))
	a.waitDelta(t, "alice told of bob", upserts("bob", true))
	rep = a.do(t, "", control.Request{Op: control.OpMembers, Network: "lan"})
	if got := memberStates(rep.Members); got["alice"] != "member+owner" || got["bob"] != "member" || len(got) != 2 {
		t.Fatalf("members: %v", got)
	}
	if m := rep.Members[0]; !m.Online || len(m.IPs) != 2 || m.Key == "" {
		t.Errorf("member entry %+v", m)
	}
	b.do(t, "", control.Request{Op: control.OpMembers, Network: "lan"})
	b.do(t, control.CodeNotOwner, control.Request{Op: control.OpKick, Network: "lan", Target: "alice"})
	a.do(t, control.CodeInvalid, control.Request{Op: control.OpKick, Network: "lan", Target: "alice"})

	// Kick: both sides lose each other, bob learns it is out; it may ask again.
	a.do(t, "", control.Request{Op: control.OpKick, Network: "lan", Target: "bob"})
	a.waitDelta(t, "alice loses bob", removes(bobKey.Public()))
	b.waitDelta(t, "bob out of lan", networksAre())
	b.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lan"})
	a.do(t, "", control.Request{Op: control.OpDeny, Network: "lan", Target: "bob"})
	a.do(t, control.CodeNotFound, control.Request{Op: control.OpApprove, Network: "lan", Target: "bob"})
	a.do(t, "", control.Request{Op: control.OpApproval, Network: "lan", Approval: false, Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})

	// Ban: out, and refused until unbanned.
	a.do(t, "", control.Request{Op: control.OpBan, Network: "lan", Target: "bob"})
	b.waitDelta(t, "bob banned", networksAre())
	b.do(t, control.CodeBanned, control.Request{Op: control.OpJoin, Network: "lan"})
	rep = a.do(t, "", control.Request{Op: control.OpMembers, Network: "lan"})
	if got := memberStates(rep.Members); got["bob"] != "banned" {
		t.Fatalf("members after ban: %v", got)
	}
	a.do(t, "", control.Request{Op: control.OpUnban, Network: "lan", Target: "bob"})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})

	// Lock.
	a.do(t, "", control.Request{Op: control.OpLock, Network: "lan"})
	c.do(t, control.CodeLocked, control.Request{Op: control.OpJoin, Network: "lan"})
	a.do(t, "", control.Request{Op: control.OpUnlock, Network: "lan"})
	c.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})

	// Password rotation: the old one (none) no longer works.
	a.do(t, "", control.Request{Op: control.OpPassword, Network: "lan", Password: "new secret"})
	c.do(t, "", control.Request{Op: control.OpLeave, Network: "lan"})
	c.do(t, control.CodeWrongPassword, control.Request{Op: control.OpJoin, Network: "lan"})
	c.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "new secret"})

	// Transfer: the new owner acts, the old one cannot.
	a.do(t, control.CodeNotFound, control.Request{Op: control.OpTransfer, Network: "lan", Target: "nobody"})
	a.do(t, "", control.Request{Op: control.OpTransfer, Network: "lan", Target: "carol"})
	a.do(t, control.CodeNotOwner, control.Request{Op: control.OpLock, Network: "lan"})
	c.do(t, "", control.Request{Op: control.OpLock, Network: "lan"})

	// Delete: every member is told.
	c.do(t, "", control.Request{Op: control.OpDelete, Network: "lan"})
	a.waitDelta(t, "alice out after delete", networksAre())
	b.waitDelta(t, "bob out after delete", networksAre())
	a.do(t, control.CodeNotFound, control.Request{Op: control.OpMembers, Network: "lan"})

	// The operator may act on any network.
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "ops", Open: true})
	if _, err := srv.Owner(context.Background(), OwnerRequest{By: Actor{Operator: true}, Op: control.OpLock, Network: "ops"}); err != nil {
		t.Fatalf("operator lock: %v", err)
	}
	b.do(t, control.CodeLocked, control.Request{Op: control.OpJoin, Network: "ops"})

	// Every action that changed something is in the audit log, with who did it; refusals and
	// listings are not.
	log, err := srv.cfg.Store.AuditLog(context.Background(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log { // oldest first
		got = append(got, e.Actor+" "+e.Action+" "+e.Target+" "+e.Detail)
	}
	// Nodes are named "name(KEYPREFIX)".
	alice, bob := store.NodeActor("alice", aliceKey.Public()), identity.Label("bob", bobKey.Public())
	if alice != "node alice("+identity.ShortID(aliceKey.Public())+")" {
		t.Errorf("NodeActor = %q", alice)
	}
	want := []string{alice + " network.approve lan " + bob, alice + " network.kick lan " + bob}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("audit log starts %q, want %q", got, want)
	}
	if last := got[len(got)-1]; last != "operator network.lock ops " {
		t.Errorf("last audit entry %q, want the operator's lock", last)
	}
	for _, e := range got {
		if strings.Contains(e, "network.members") || strings.Contains(e, "network.pending") {
			t.Errorf("a listing was audited: %q", e)
		}
	}
}

// TestKickKeepsOtherNetworks: a kicked node that still shares another network with a peer stays
// visible to it, with only that network listed.
func TestKickKeepsOtherNetworks(t *testing.T) {
	srv := startServer(t)
	a, b := dial(t, srv), dial(t, srv)
	a.login(t, "alice")
	b.login(t, "bob")
	for _, n := range []string{"lan", "game"} {
		a.do(t, "", control.Request{Op: control.OpCreate, Network: n, Open: true})
		b.do(t, "", control.Request{Op: control.OpJoin, Network: n})
	}
	a.do(t, "", control.Request{Op: control.OpKick, Network: "lan", Target: "bob"})
	a.waitDelta(t, "bob now only in game", func(d *control.PeerDelta) bool {
		for _, p := range d.Upsert {
			if p.Name == "bob" && slices.Equal(p.Networks, []string{"game"}) {
				return true
			}
		}
		if len(d.Remove) > 0 {
			t.Fatalf("bob removed although it still shares game")
		}
		return false
	})
	b.waitDelta(t, "bob's networks", networksAre("game"))
}

func TestMembershipLimits(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.MaxNetworksPerNode = 2; c.MaxNodesPerNetwork = 2 })
	a, b, c := dial(t, srv), dial(t, srv), dial(t, srv)
	a.login(t, "alice")
	b.login(t, "bob")
	c.login(t, "carol")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "one", Open: true})
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "two", Open: true})
	a.do(t, control.CodeTooManyNetworks, control.Request{Op: control.OpCreate, Network: "three", Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "one"})
	c.do(t, control.CodeNetworkFull, control.Request{Op: control.OpJoin, Network: "one"})
	c.do(t, "", control.Request{Op: control.OpCreate, Network: "three", Open: true})
	c.do(t, "", control.Request{Op: control.OpCreate, Network: "four", Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "three"})
	b.do(t, control.CodeTooManyNetworks, control.Request{Op: control.OpJoin, Network: "four"})
}

// rawDial completes a QUIC handshake with the server and sends nothing more.
func rawDial(srv *Server) (*quic.Conn, error) {
	key, _ := identity.Generate()
	tlsConf, _ := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return quic.DialAddr(ctx, srv.Addr().String(), tlsConf, &quic.Config{HandshakeIdleTimeout: 10 * time.Second})
}

// TestPendingLoginsBounded: connections that never log in hold a pending slot until the login
// timeout; with every slot taken, new connections are refused at the handshake, and once the
// timeout frees the slots, a real node logs in again.
func TestPendingLoginsBounded(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.MaxPendingLogins = 3; c.LoginTimeout = 5 * time.Second })
	var idle []*quic.Conn
	for i := range 3 {
		conn, err := rawDial(srv)
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		idle = append(idle, conn)
		defer conn.CloseWithError(0, "")
	}
	if p, _ := srv.PendingLogins(); p != 3 {
		t.Errorf("pending = %d, want 3", p)
	}
	if conn, err := rawDial(srv); err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("a fourth half-open connection was accepted")
	}
	if _, refused := srv.PendingLogins(); refused == 0 {
		t.Error("refusal not counted")
	}
	// The server closes the idle ones after LoginTimeout; their slots come back.
	for _, c := range idle {
		select {
		case <-c.Context().Done():
		case <-time.After(ioTimeout):
			t.Fatal("idle connection outlived the login timeout")
		}
	}
	noPending := func() bool { p, _ := srv.PendingLogins(); return p == 0 }
	testkit.Eventually(t, 10*time.Second, noPending, "logins still pending after the idle connections closed")
	n := dial(t, srv)
	n.login(t, "late")
	testkit.Eventually(t, 10*time.Second, noPending, "a logged-in node still counts as pending")
}

// TestRelayStopsAfterKick: the relay forwards nothing more between a kicked node and its former
// peers, in either direction.
func TestRelayStopsAfterKick(t *testing.T) {
	srv := startServer(t)
	x, y := dialSide(t, srv, "x"), dialSide(t, srv, "y")
	x.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	y.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	x.next(0)
	y.next(0)
	send := func(from, to *sideClient) {
		t.Helper()
		if _, err := from.tr.WriteTo(control.AppendRelay(nil, control.KindRelayTo, to.key, []byte("ciphertext")), srv.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	send(y, x)
	if x.next(ioTimeout) == nil {
		t.Fatal("relay did not forward between members")
	}
	x.do(t, "", control.Request{Op: control.OpKick, Network: "lan", Target: "y"})
	send(y, x)
	send(x, y)
	if got := x.relayedBefore(t, srv); got != nil {
		t.Fatalf("x received %x from the kicked node", got)
	}
	if got := y.relayedBefore(t, srv); got != nil {
		t.Fatalf("the kicked node received %x", got)
	}
}

// TestBanAfterKick: a node no longer in the network can be banned by its key fingerprint (not by
// name: names are not unique outside a network), and then cannot ask to join again.
func TestBanAfterKick(t *testing.T) {
	srv := startServer(t)
	a := dial(t, srv)
	bKey := mustKey(t)
	b := dialKey(t, srv, bKey)
	a.login(t, "alice")
	b.login(t, "bob")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	a.do(t, "", control.Request{Op: control.OpKick, Network: "lan", Target: "bob"})
	rep := a.do(t, control.CodeNotFound, control.Request{Op: control.OpBan, Network: "lan", Target: "bob"})
	if !strings.Contains(rep.Error, "key fingerprint") {
		t.Errorf("ban by name after the kick: %q does not say how", rep.Error)
	}
	a.do(t, "", control.Request{Op: control.OpBan, Network: "lan", Target: bKey.Fingerprint()})
	b.do(t, control.CodeBanned, control.Request{Op: control.OpJoin, Network: "lan"})
	// A fingerprint no node has is still not found.
	a.do(t, control.CodeNotFound, control.Request{Op: control.OpBan, Network: "lan", Target: mustKey(t).Fingerprint()})
}
