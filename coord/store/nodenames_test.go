package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestNameStableAcrossLogins: the name a node first logs in with stays; a later login under another
// name does not rename it (repro: mallory restarted with --name alice and matched alice's rules).
func TestNameStableAcrossLogins(t *testing.T) {
	s := open(t, tempDB(t), testPools)
	upsert(t, s, key(1), "mallory")
	if n := upsert(t, s, key(1), "alice"); n.Name != "mallory" {
		t.Fatalf("login as alice renamed the node to %q", n.Name)
	}
	if err := s.RenameNode(context.Background(), key(1), "mal"); err != nil {
		t.Fatal(err)
	}
	if n := upsert(t, s, key(1), "mallory"); n.Name != "mal" {
		t.Fatalf("after RenameNode, a login named the node %q", n.Name)
	}
}

// TestNameUniqueInNetwork: a node cannot join, be approved into, or redeem an auth key for a network
// where another member has its name, nor rename to a name a node it shares a network with has;
// nodes that share no network may have one name.
func TestNameUniqueInNetwork(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	upsert(t, s, key(1), "owner")
	upsert(t, s, key(2), "bob")
	upsert(t, s, key(3), "bob") // another bob, in no network yet: allowed
	upsert(t, s, key(4), "carol")
	for _, n := range []string{"lan", "wait", "keyed"} {
		if err := s.CreateNetwork(ctx, n, "", key(1)); err != nil {
			t.Fatal(err)
		}
		if err := s.AddMember(ctx, n, key(2)); err != nil {
			t.Fatal(err)
		}
	}
	taken := func(what string, err error, network string) {
		t.Helper()
		var nt *NameTakenError
		if !errors.As(err, &nt) || !errors.Is(err, ErrNameTaken) || nt.Name != "bob" || nt.Network != network {
			t.Errorf("%s: got %v, want bob taken in %s", what, err, network)
		}
	}
	taken("join", s.AddMember(ctx, "lan", key(3)), "lan")

	if err := s.AddPending(ctx, "wait", key(3)); err != nil {
		t.Fatal(err)
	}
	taken("approve", s.Approve(ctx, "wait", key(3)), "wait")
	if _, pending, _, _ := s.Standing(ctx, "wait", key(3)); !pending {
		t.Error("a refused approval dropped the pending join")
	}

	_, secret, err := s.CreateAuthKey(ctx, AuthKeyOptions{Network: "keyed", Reusable: true, Tag: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.RedeemAuthKey(ctx, key(3), secret, time.Now(), Limits{})
	taken("auth key", err, "keyed")
	if n, _ := s.Node(ctx, key(3)); n.Tag != "" || n.AuthKeyID != "" {
		t.Errorf("a refused auth key still tagged the node: %+v", n)
	}

	// Renames: carol joins lan and may not become bob there; she may rename to a free name, and
	// the second bob, once renamed, may join.
	if err := s.AddMember(ctx, "lan", key(4)); err != nil {
		t.Fatal(err)
	}
	err = s.RenameNode(ctx, key(4), "bob")
	taken("rename", err, "lan")
	if err := s.RenameNode(ctx, key(4), "carol"); err != nil {
		t.Errorf("rename to its own name: %v", err)
	}
	if err := s.RenameNode(ctx, key(3), "bob2"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, "lan", key(3)); err != nil {
		t.Errorf("join after renaming: %v", err)
	}
	// bob leaves lan: carol, in lan only, shares no network with him any more and may be bob.
	if err := s.RemoveMember(ctx, "lan", key(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.RenameNode(ctx, key(4), "bob"); err != nil {
		t.Errorf("rename to a name no node in lan has: %v", err)
	}
}
