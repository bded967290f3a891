package store

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"
)

// TestMigrationKeepsOldNetworksOpen: a network that took anyone before networks were closed by
// default (no password, no approval) is marked open by the migration and still takes anyone; one
// with a password or approval is not open.
func TestMigrationKeepsOldNetworksOpen(t *testing.T) {
	path := tempDB(t)
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	const before = 7 // the schema before is_open
	owner := `x'` + strings.Repeat("01", 32) + `'`
	stmts := append(append([]string(nil), migrations[:before]...),
		`INSERT INTO nodes (key, name, ip_index, created_at, last_seen) VALUES (`+owner+`, 'a', 1, 1, 1)`,
		`INSERT INTO settings (name, value) VALUES ('pool4', '`+testPools.V4.String()+`'), ('pool6', '`+testPools.V6.String()+`')`,
		`INSERT INTO networks (name, password_hash, owner, created_at, approval) VALUES
			('free', '', `+owner+`, 1, 0), ('secret', '$argon2id$x', `+owner+`, 1, 0), ('asked', '', `+owner+`, 1, 1)`,
		`PRAGMA user_version = 7`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s := open(t, path, testPools)
	for name, want := range map[string]bool{"free": true, "secret": false, "asked": false} {
		n, err := s.Network(context.Background(), name)
		if err != nil || n.Open != want {
			t.Errorf("%s after migration: open %v, %v; want open %v", name, n.Open, err, want)
		}
	}
}

func TestJoinRequests(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.CreateNetwork(ctx, "lan", "", key(1)))
	must(s.CreateNetwork(ctx, "lab", "", key(1)))
	must(s.CreateNetwork(ctx, "other", "", key(2)))
	must(s.SetOpen(ctx, "lan", true))
	if n, _ := s.Network(ctx, "lan"); !n.Open {
		t.Errorf("SetOpen did not open lan")
	}
	t0 := time.Unix(1_700_000_000, 0)
	must(s.AddJoinRequest(ctx, "lan", key(3), "192.0.2.1/32", t0))
	must(s.AddJoinRequest(ctx, "lab", key(3), "192.0.2.1/32", t0.Add(time.Hour)))
	must(s.AddJoinRequest(ctx, "lab", key(4), "192.0.2.1/32", t0.Add(2*time.Hour)))
	must(s.AddJoinRequest(ctx, "other", key(5), "2001:db8::/64", t0))
	must(s.AddJoinRequest(ctx, "lab", key(4), "198.51.100.1/32", t0.Add(3*time.Hour))) // again: the first stays

	if in, all, err := s.CountPendingFrom(ctx, "lab", "192.0.2.1/32"); err != nil || in != 2 || all != 3 {
		t.Errorf("CountPendingFrom = %d, %d, %v; want 2, 3", in, all, err)
	}
	reqs, total, err := s.JoinRequestsFor(ctx, key(1), 2)
	if err != nil || total != 3 || len(reqs) != 2 || reqs[0].Network != "lan" || !bytes.Equal(reqs[0].Key, key(3)) ||
		reqs[0].Name != "echo" || !reqs[0].At.Equal(t0) || reqs[1].Network != "lab" {
		t.Fatalf("JoinRequestsFor = %+v, %d, %v", reqs, total, err)
	}
	owners, err := s.ExpirePending(ctx, t0.Add(90*time.Minute))
	if err != nil || len(owners) != 2 {
		t.Fatalf("ExpirePending = %x, %v; want the owners of lan, lab and other", owners, err)
	}
	if reqs, total, _ := s.JoinRequestsFor(ctx, key(1), 10); total != 1 || reqs[0].Network != "lab" || !bytes.Equal(reqs[0].Key, key(4)) {
		t.Errorf("after expiry: %+v, %d", reqs, total)
	}
	if n, err := s.DenyAll(ctx, "lab"); err != nil || n != 1 {
		t.Errorf("DenyAll = %d, %v", n, err)
	}
	if _, total, _ := s.JoinRequestsFor(ctx, key(1), 10); total != 0 {
		t.Errorf("after DenyAll: %d requests", total)
	}
}
