package coord

import (
	"slices"
	"testing"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// member logs a new node in as name and joins it to network "ci".
func member(t *testing.T, srv *Server, name string) (*client, *identity.Key) {
	t.Helper()
	k, _ := identity.Generate()
	c := dialKey(t, srv, k)
	c.login(t, name)
	if rep := c.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"}); rep.Code != "" {
		t.Fatalf("%s joins: %+v", name, rep)
	}
	return c, k
}

// TestNameUniqueAndStable: a node keeps the name it first logged in with, and no two nodes that
// share a network have one name. Repro (b): mallory logs in as bob to take over bob.warren.
func TestNameUniqueAndStable(t *testing.T) {
	srv := startServer(t)
	ownerWithNetwork(t, srv)
	member(t, srv, "bob")
	alice, aliceKey := member(t, srv, "alice")

	mallory := dial(t, srv)
	mallory.login(t, "bob")
	rep := mallory.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"})
	if rep.Code != control.CodeNameTaken {
		t.Fatalf("a second bob joined: %+v", rep)
	}
	t.Logf("refusal: %s", rep.Error)

	// alice comes back as bob: she is still alice, and told so.
	alice.conn.CloseWithError(0, "")
	again := dialKey(t, srv, aliceKey)
	if w := again.login(t, "bob"); w.Name != "alice" {
		t.Fatalf("welcome name %q after a login as bob, want alice", w.Name)
	}
	rep = again.request(t, control.Request{ID: 2, Op: control.OpMembers, Network: "ci"})
	var names []string
	for _, m := range rep.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"alice", "bob", "owner"}) {
		t.Errorf("members %v", names)
	}
}

// TestRename: renaming is a request; a taken name is refused; peers get the new name.
func TestRename(t *testing.T) {
	srv := startServer(t)
	owner := ownerWithNetwork(t, srv)
	member(t, srv, "bob")
	alice, _ := member(t, srv, "alice")
	if rep := alice.request(t, control.Request{ID: 5, Op: control.OpRename, Name: "bob"}); rep.Code != control.CodeNameTaken {
		t.Fatalf("rename to a taken name: %+v", rep)
	}
	if rep := alice.request(t, control.Request{ID: 6, Op: control.OpRename, Name: "Bad Name"}); rep.Code != control.CodeInvalid {
		t.Fatalf("rename to an invalid name: %+v", rep)
	}
	if rep := alice.request(t, control.Request{ID: 7, Op: control.OpRename, Name: "carol"}); rep.Code != "" || rep.Name != "carol" {
		t.Fatalf("rename: %+v", rep)
	}
	owner.waitDelta(t, "alice's new name", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "carol"
	})
}

// aclOf waits for a delta that carries rules for network and returns them.
func (c *client) aclOf(t *testing.T, network string) []control.ACLRule {
	t.Helper()
	var rules []control.ACLRule
	c.waitDelta(t, "rules of "+network, func(d *control.PeerDelta) bool {
		for _, a := range d.ACLs {
			if a.Network == network && len(a.Rules) > 0 {
				rules = a.Rules
				return true
			}
		}
		return false
	})
	return rules
}

// TestRulesFollowKeys: a rule that names a node is bound to its key, so it follows the node
// through a rename and a node that later takes the name gets nothing. Repro (a): rules from alice to
// bob; mallory comes back as alice.
func TestRulesFollowKeys(t *testing.T) {
	srv := startServer(t)
	owner := ownerWithNetwork(t, srv)
	bob, _ := member(t, srv, "bob")
	alice, aliceKey := member(t, srv, "alice")
	mallory, malloryKey := member(t, srv, "mallory")
	aliceFP, malloryFP := identity.Fingerprint(aliceKey.Public()), identity.Fingerprint(malloryKey.Public())

	rules := []control.ACLRule{{From: []string{"alice", "carol"}, To: []string{"bob"}, Ports: []string{"48082/tcp"}}}
	rep := owner.request(t, control.Request{ID: 10, Op: control.OpACLSet, Network: "ci", Rules: rules})
	if rep.Code != "" || rep.ACL == nil || !slices.Equal(rep.ACL.Rules[0].From, []string{"alice", "carol"}) {
		t.Fatalf("set: %+v", rep)
	}
	got := bob.aclOf(t, "ci")
	if !slices.Contains(got[0].From, acl.KeyEntry(aliceFP)) || slices.Contains(got[0].From, "alice") {
		t.Fatalf("bob got rules %v, want alice bound to her key", got)
	}

	// alice renames away; mallory takes her name. The rules bob has still name alice's key, and
	// the owner sees alice's new name in them.
	if rep := alice.request(t, control.Request{ID: 11, Op: control.OpRename, Name: "alice-old"}); rep.Code != "" {
		t.Fatal(rep)
	}
	if rep := mallory.request(t, control.Request{ID: 12, Op: control.OpRename, Name: "alice"}); rep.Code != "" {
		t.Fatal(rep)
	}
	show := owner.request(t, control.Request{ID: 13, Op: control.OpACLShow, Network: "ci"})
	if show.ACL == nil || !slices.Equal(show.ACL.Rules[0].From, []string{"alice-old", "carol"}) {
		t.Fatalf("show after the renames: %+v", show.ACL)
	}
	bob2 := dial(t, srv) // what a node logging in now gets
	bob2.login(t, "observer")
	if rep := bob2.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"}); rep.Code != "" {
		t.Fatal(rep)
	}
	for _, r := range bob2.aclOf(t, "ci") {
		if slices.Contains(r.From, acl.KeyEntry(malloryFP)) || slices.Contains(r.From, "alice") {
			t.Fatalf("rules %v grant mallory, who took the name alice", r)
		}
	}

	// A name no member had when the rules were set binds to the first node that has it.
	_, carolKey := member(t, srv, "carol")
	got = bob.aclOf(t, "ci")
	if !slices.Contains(got[0].From, acl.KeyEntry(identity.Fingerprint(carolKey.Public()))) {
		t.Fatalf("after carol joined, bob has rules %v", got)
	}

	// alice-old leaves: show names her by key, and set takes that back unchanged.
	if rep := alice.request(t, control.Request{ID: 14, Op: control.OpLeave, Network: "ci"}); rep.Code != "" {
		t.Fatal(rep)
	}
	show = owner.request(t, control.Request{ID: 15, Op: control.OpACLShow, Network: "ci"})
	if !slices.Contains(show.ACL.Rules[0].From, acl.KeyEntry(aliceFP)) {
		t.Fatalf("show after alice left: %v", show.ACL.Rules)
	}
	if rep := owner.request(t, control.Request{ID: 16, Op: control.OpACLSet, Network: "ci", Rules: show.ACL.Rules}); rep.Code != "" {
		t.Fatalf("set what show returned: %+v", rep)
	}
}

// TestApprovedNodeGetsBoundRules: a node whose join the owner approves gets the network's rules,
// with its own name bound to its key, and a second node of that name is refused at approval.
func TestApprovedNodeGetsBoundRules(t *testing.T) {
	srv := startServer(t)
	owner := dial(t, srv)
	owner.login(t, "owner")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Approval: true})
	rules := []control.ACLRule{{From: []string{"db"}, To: []string{"owner"}, Ports: []string{"22/tcp"}}}
	owner.do(t, "", control.Request{Op: control.OpACLSet, Network: "lan", Rules: rules})

	dbKey, _ := identity.Generate()
	db := dialKey(t, srv, dbKey)
	db.login(t, "db")
	db.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lan"})
	otherKey, _ := identity.Generate()
	other := dialKey(t, srv, otherKey)
	other.login(t, "db")
	other.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lan"})

	owner.do(t, "", control.Request{Op: control.OpApprove, Network: "lan", Target: identity.Fingerprint(dbKey.Public())})
	got := db.aclOf(t, "lan")
	if !slices.Contains(got[0].From, acl.KeyEntry(identity.Fingerprint(dbKey.Public()))) {
		t.Fatalf("approved db got rules %v", got)
	}
	rep := owner.do(t, control.CodeNameTaken, control.Request{Op: control.OpApprove, Network: "lan", Target: identity.Fingerprint(otherKey.Public())})
	t.Logf("second db: %s", rep.Error)
}
