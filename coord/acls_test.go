package coord

import (
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// hasACL matches a delta that carries network's rule list with n rules (0 = cleared).
func hasACL(network string, n int) func(*control.PeerDelta) bool {
	return func(d *control.PeerDelta) bool {
		for _, a := range d.ACLs {
			if a.Network == network && len(a.Rules) == n {
				return true
			}
		}
		return false
	}
}

// requestUntil sends r and reads until its reply and a delta satisfying ok both came, in any order.
func (c *client) requestUntil(t *testing.T, r control.Request, what string, ok func(*control.PeerDelta) bool) *control.Reply {
	t.Helper()
	c.send(t, &control.Msg{Type: control.TypeRequest, Request: &r})
	c.stream.SetDeadline(time.Now().Add(ioTimeout))
	var rep *control.Reply
	seen := false
	for rep == nil || !seen {
		m, err := control.ReadMsg(c.stream)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		switch {
		case m.Type == control.TypeReply && m.Reply.ID == r.ID:
			rep = m.Reply
		case m.Type == control.TypePeerDelta && ok(m.PeerDelta):
			seen = true
		}
	}
	return rep
}

// loginMap logs in with l and returns the Welcome and the peer map.
func (c *client) loginMap(t *testing.T, l control.Login) (*control.Welcome, *control.PeerMap) {
	t.Helper()
	l.Version = control.Version
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &l})
	w := c.recv(t, control.TypeWelcome).Welcome
	return w, c.recv(t, control.TypePeerMap).PeerMap
}

func TestACLRequests(t *testing.T) {
	srv := startServer(t)
	owner := ownerWithNetwork(t, srv)
	key := newKey(t, srv, store.AuthKeyOptions{Tag: "ci", Reusable: true, Expiry: time.Hour})
	runnerKey, _ := identity.Generate()
	runner := dialKey(t, srv, runnerKey)
	w, _ := runner.loginMap(t, control.Login{Name: "runner", AuthKey: key})
	if w.Tag != "ci" {
		t.Errorf("welcome tag %q, want ci", w.Tag)
	}
	// Peers see the runner's tag.
	owner.waitDelta(t, "runner with its tag", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "runner" && d.Upsert[0].Tag == "ci"
	})
	outsider := dial(t, srv)
	outsider.login(t, "outsider")

	rules := []control.ACLRule{
		{From: []string{"tag:ci"}, To: []string{"owner"}, Ports: []string{"22/tcp"}},
		{From: []string{"owner"}, To: []string{"*"}, Ports: []string{"*"}},
	}
	set := control.Request{ID: 10, Op: control.OpACLSet, Network: "ci", Rules: rules}
	// Only the owner may change the rules; members may read them; others may not.
	if rep := runner.request(t, set); rep.Code != control.CodeNotOwner {
		t.Errorf("set by a member: %+v", rep)
	}
	if rep := outsider.request(t, set); rep.Code != control.CodeNotOwner {
		t.Errorf("set by an outsider: %+v", rep)
	}
	if rep := runner.request(t, control.Request{ID: 11, Op: control.OpACLClear, Network: "ci"}); rep.Code != control.CodeNotOwner {
		t.Errorf("clear by a member: %+v", rep)
	}
	if rep := owner.request(t, control.Request{ID: 12, Op: control.OpACLSet, Network: "nope", Rules: rules}); rep.Code != control.CodeNotFound {
		t.Errorf("set on a missing network: %+v", rep)
	}
	bad := control.Request{ID: 13, Op: control.OpACLSet, Network: "ci", Rules: []control.ACLRule{{From: []string{"x"}, To: []string{"y"}, Ports: []string{"22/sctp"}}}}
	if rep := owner.request(t, bad); rep.Code != control.CodeInvalid {
		t.Errorf("invalid rules: %+v", rep)
	}
	if rep := runner.request(t, control.Request{ID: 14, Op: control.OpACLShow, Network: "ci"}); rep.Code != "" || rep.ACL == nil || len(rep.ACL.Rules) != 0 {
		t.Errorf("show before any rules: %+v", rep)
	}

	if rep := owner.request(t, set); rep.Code != "" || rep.ACL == nil || len(rep.ACL.Rules) != 2 {
		t.Fatalf("set by the owner: %+v", rep)
	}
	runner.waitDelta(t, "the new rules", hasACL("ci", 2))
	if rep := runner.request(t, control.Request{ID: 15, Op: control.OpACLShow, Network: "ci"}); rep.Code != "" || rep.ACL == nil || len(rep.ACL.Rules) != 2 || rep.ACL.Rules[0].From[0] != "tag:ci" {
		t.Errorf("show by a member: %+v", rep)
	}
	if rep := outsider.request(t, control.Request{ID: 16, Op: control.OpACLShow, Network: "ci"}); rep.Code != control.CodeNotMember {
		t.Errorf("show by an outsider: %+v", rep)
	}

	// A node logging in gets its networks' rules with the peer map.
	runner.conn.CloseWithError(0, "")
	runner = dialKey(t, srv, runnerKey)
	if _, pm := runner.loginMap(t, control.Login{Name: "runner"}); len(pm.ACLs) != 1 || pm.ACLs[0].Network != "ci" || len(pm.ACLs[0].Rules) != 2 {
		t.Errorf("peer map rules at login: %+v", pm.ACLs)
	}
	// A node joining gets them too, before (or with) the peers they apply to; leaving clears them.
	if rep := outsider.requestUntil(t, control.Request{ID: 17, Op: control.OpJoin, Network: "ci"}, "rules on join", hasACL("ci", 2)); rep.Code != "" {
		t.Fatalf("join: %+v", rep)
	}
	if rep := outsider.requestUntil(t, control.Request{ID: 18, Op: control.OpLeave, Network: "ci"}, "rules cleared on leave", hasACL("ci", 0)); rep.Code != "" {
		t.Fatalf("leave: %+v", rep)
	}

	// Clearing goes back to the default everywhere, and survives a new login.
	if rep := owner.request(t, control.Request{ID: 19, Op: control.OpACLClear, Network: "ci"}); rep.Code != "" || rep.ACL == nil || len(rep.ACL.Rules) != 0 {
		t.Fatalf("clear: %+v", rep)
	}
	runner.waitDelta(t, "rules cleared", hasACL("ci", 0))
	runner.conn.CloseWithError(0, "")
	runner = dialKey(t, srv, runnerKey)
	if _, pm := runner.loginMap(t, control.Login{Name: "runner"}); len(pm.ACLs) != 0 {
		t.Errorf("peer map rules after clear: %+v", pm.ACLs)
	}
}
