package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func roster(t *testing.T, s *Store, network string) map[string]string {
	t.Helper()
	r, err := s.Roster(context.Background(), network)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, e := range r {
		name := "?"
		if e.Node != nil {
			name = e.Node.Name
		}
		out[name] = e.State
	}
	return out
}

func TestNetworkAdmin(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.CreateNetwork(ctx, "lan", "", key(1)))
	must(s.SetApproval(ctx, "lan", true))
	must(s.SetLocked(ctx, "lan", true))
	n, err := s.Network(ctx, "lan")
	must(err)
	if !n.Approval || !n.Locked {
		t.Fatalf("flags not stored: %+v", n)
	}
	if err := s.SetLocked(ctx, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("lock of a missing network: %v", err)
	}

	// Pending → approved; a second approval finds nothing.
	must(s.AddPending(ctx, "lan", key(2)))
	must(s.AddPending(ctx, "lan", key(2)))
	must(s.AddPending(ctx, "lan", key(3)))
	if got := roster(t, s, "lan"); got["alpha"] != StatePending || got["echo"] != StatePending || got["delta"] != StateMember {
		t.Fatalf("roster %v", got)
	}
	must(s.Approve(ctx, "lan", key(2)))
	if err := s.Approve(ctx, "lan", key(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("second approve: %v", err)
	}
	if ok, err := s.RemovePending(ctx, "lan", key(3)); err != nil || !ok {
		t.Errorf("deny: %v %v", ok, err)
	}
	if m, p, b, err := s.Standing(ctx, "lan", key(2)); err != nil || !m || p || b {
		t.Errorf("standing of approved node: %v %v %v %v", m, p, b, err)
	}

	// Ban removes membership and stays for a key the nodes table forgets.
	must(s.Ban(ctx, "lan", key(2)))
	if m, _, b, _ := s.Standing(ctx, "lan", key(2)); m || !b {
		t.Errorf("after ban: member %v banned %v", m, b)
	}
	must(s.Ban(ctx, "lan", key(77))) // never registered
	got := roster(t, s, "lan")
	if got["alpha"] != StateBanned || got["?"] != StateBanned || len(got) != 3 {
		t.Errorf("roster after bans %v", got)
	}
	if ok, err := s.Unban(ctx, "lan", key(77)); err != nil || !ok {
		t.Errorf("unban: %v %v", ok, err)
	}
	if c, _ := s.CountMembers(ctx, "lan"); c != 1 {
		t.Errorf("members %d, want 1", c)
	}

	// Transfer only to a member.
	if err := s.SetOwner(ctx, "lan", key(3)); !errors.Is(err, ErrNotMember) {
		t.Errorf("transfer to non-member: %v", err)
	}
	must(s.AddMember(ctx, "lan", key(3)))
	must(s.SetOwner(ctx, "lan", key(3)))
	if n, _ := s.Network(ctx, "lan"); string(n.Owner) != string(key(3)) {
		t.Errorf("owner not transferred")
	}
	if c, _ := s.CountNetworks(ctx, key(3)); c != 1 {
		t.Errorf("networks of echo %d", c)
	}

	// A banned node cannot come back with an auth key; a locked network takes no new node.
	_, secret, err := s.CreateAuthKey(ctx, AuthKeyOptions{Network: "lan", Reusable: true})
	must(err)
	if _, _, err := s.RedeemAuthKey(ctx, key(2), secret, time.Now(), Limits{}); !errors.Is(err, ErrBanned) {
		t.Errorf("banned node redeemed a key: %v", err)
	}
	if _, _, err := s.RedeemAuthKey(ctx, key(4), secret, time.Now(), Limits{}); !errors.Is(err, ErrLocked) {
		t.Errorf("key redeemed into a locked network: %v", err)
	}
	must(s.SetLocked(ctx, "lan", false))
	if _, ok, err := s.RedeemAuthKey(ctx, key(4), secret, time.Now(), Limits{}); err != nil || !ok {
		t.Errorf("key into unlocked network: %v %v", ok, err)
	}

	// Delete takes everything with it.
	must(s.AddPending(ctx, "lan", key(5)))
	must(s.DeleteNetwork(ctx, "lan"))
	if err := s.DeleteNetwork(ctx, "lan"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if got := roster(t, s, "lan"); len(got) != 0 {
		t.Errorf("roster of deleted network %v", got)
	}
	if nets, _ := s.NetworksOf(ctx, key(3)); len(nets) != 0 {
		t.Errorf("networks after delete %v", nets)
	}
}
