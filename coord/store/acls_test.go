package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
)

func TestACLs(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	for _, n := range []string{"lan", "wan", "dmz"} {
		if err := s.CreateNetwork(ctx, n, "", key(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddMember(ctx, "lan", key(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetACL(ctx, "nope", `[]`); !errors.Is(err, ErrNotFound) {
		t.Errorf("rules for a missing network: %v", err)
	}
	if err := s.SetACL(ctx, "lan", `[1]`); err != nil {
		t.Fatal(err)
	}
	if err := s.SetACL(ctx, "lan", `[2]`); err != nil { // replaces
		t.Fatal(err)
	}
	if err := s.SetACL(ctx, "wan", `[3]`); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ACL(ctx, "lan"); err != nil || got != `[2]` {
		t.Errorf("ACL(lan) = %q, %v", got, err)
	}
	if got, err := s.ACL(ctx, "dmz"); err != nil || got != "" {
		t.Errorf("ACL(dmz) = %q, %v; want none", got, err)
	}
	if got, err := s.ACLsOf(ctx, key(1)); err != nil || !reflect.DeepEqual(got, map[string]string{"lan": `[2]`, "wan": `[3]`}) {
		t.Errorf("ACLsOf(owner) = %v, %v", got, err)
	}
	if got, err := s.ACLsOf(ctx, key(2)); err != nil || !reflect.DeepEqual(got, map[string]string{"lan": `[2]`}) {
		t.Errorf("ACLsOf(member) = %v, %v", got, err)
	}
	if got, err := s.ACLsOf(ctx, key(3)); err != nil || len(got) != 0 {
		t.Errorf("ACLsOf(outsider) = %v, %v", got, err)
	}
	if err := s.ClearACL(ctx, "lan"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearACL(ctx, "lan"); err != nil {
		t.Errorf("clearing twice: %v", err)
	}
	if got, _ := s.ACL(ctx, "lan"); got != "" {
		t.Errorf("cleared rules still there: %q", got)
	}
}

// TestACLsPersist: rules survive reopening the database.
func TestACLsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	s := open(t, path, testPools)
	ctx := context.Background()
	upsert(t, s, key(1), "alpha")
	if err := s.CreateNetwork(ctx, "lan", "", key(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetACL(ctx, "lan", `[9]`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path, testPools)
	if got, err := s.ACL(ctx, "lan"); err != nil || got != `[9]` {
		t.Errorf("after reopening: %q, %v", got, err)
	}
}
