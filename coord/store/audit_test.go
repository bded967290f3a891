package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAuditLog(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s := open(t, path, testPools)
	if err := s.Audit(ctx, AuditEntry{Actor: OperatorActor(0)}); err == nil {
		t.Error("an entry without an action was accepted")
	}
	long := strings.Repeat("é", 3000) // 6000 bytes
	entries := []AuditEntry{
		{Actor: OperatorActor(1000), Action: "block.add", Target: "10.0.0.0/8", Detail: "spam"},
		{Actor: NodeActor("owner", key(7)), Action: "network.kick", Target: "games", Detail: long},
		{Actor: OperatorActor(-1), Action: "node.remove", Target: "laptop", Time: time.Now().Add(-time.Hour)},
	}
	for _, e := range entries {
		if err := s.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// A second Store on the same file (a CLI while the server runs) sees and appends to the log.
	other := open(t, path, Pools{})
	if err := other.Audit(ctx, AuditEntry{Actor: OperatorActor(0), Action: "authkey.revoke", Target: "0123456789ab"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.AuditLog(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"block.add", "network.kick", "node.remove", "authkey.revoke"}
	if len(got) != len(want) {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	for i, e := range got {
		if e.Action != want[i] || (i > 0 && e.ID <= got[i-1].ID) {
			t.Errorf("entry %d: %+v, want action %s with increasing IDs", i, e, want[i])
		}
	}
	if got[0].Actor != "operator uid=1000" || got[0].Target != "10.0.0.0/8" || got[0].Detail != "spam" || time.Since(got[0].Time) > time.Minute {
		t.Errorf("first entry: %+v", got[0])
	}
	if got[1].Actor != "node owner(BwcHBwcH)" || len(got[1].Detail) > maxAuditDetail || !utf8.ValidString(got[1].Detail) || !strings.HasSuffix(got[1].Detail, "…") {
		t.Errorf("second entry: actor %q, detail %d bytes, valid %v", got[1].Actor, len(got[1].Detail), utf8.ValidString(got[1].Detail))
	}
	if got[2].Actor != "operator" {
		t.Errorf("unknown uid: %q", got[2].Actor)
	}

	// since and limit: the newest entries, oldest first.
	recent, err := s.AuditLog(ctx, time.Now().Add(-time.Minute), 0)
	if err != nil || len(recent) != 3 || recent[2].Action != "authkey.revoke" {
		t.Errorf("since a minute ago: %v %+v", err, recent)
	}
	last2, err := s.AuditLog(ctx, time.Time{}, 2)
	if err != nil || len(last2) != 2 || last2[0].Action != "node.remove" || last2[1].Action != "authkey.revoke" {
		t.Errorf("limit 2: %v %+v", err, last2)
	}
}

func TestAuditRetention(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s := open(t, path, testPools)
	for _, bad := range []struct {
		keep int
		age  time.Duration
	}{{0, time.Hour}, {10, 0}, {-1, -time.Hour}} {
		if err := s.SetAuditRetention(ctx, bad.keep, bad.age); err == nil {
			t.Errorf("retention %d, %v accepted", bad.keep, bad.age)
		}
	}
	if err := s.SetAuditRetention(ctx, 5, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	// An entry older than the age is pruned by the next insert.
	if err := s.Audit(ctx, AuditEntry{Action: "old", Time: time.Now().Add(-25 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// Written by another Store (the CLI on the data directory): the recorded retention applies.
	other := open(t, path, Pools{})
	for i := range 8 {
		if err := other.Audit(ctx, AuditEntry{Action: fmt.Sprintf("a%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.AuditLog(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range got {
		actions = append(actions, e.Action)
	}
	if strings.Join(actions, ",") != "a3,a4,a5,a6,a7" {
		t.Errorf("kept %v, want the newest 5", actions)
	}
	var n int
	s.db.QueryRow(`SELECT COUNT(*) FROM audit`).Scan(&n)
	if n != 5 {
		t.Errorf("%d rows in the table", n)
	}
}

func TestSettings(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	if _, ok, err := s.Setting(ctx, "blocklist"); ok || err != nil {
		t.Errorf("unset setting: %v %v", ok, err)
	}
	for _, v := range []string{"/a", "/b"} {
		if err := s.SetSetting(ctx, "blocklist", v); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := s.Setting(ctx, "blocklist"); v != "/b" || !ok || err != nil {
		t.Errorf("setting: %q %v %v", v, ok, err)
	}
	if err := s.SetSetting(ctx, "pool4", "10.0.0.0/8"); err == nil {
		t.Error("SetSetting overwrote the pools")
	}
}

func TestListingsAndDeleteNode(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	a, b := upsert(t, s, key(1), "alpha"), upsert(t, s, key(2), "bravo")
	upsert(t, s, key(3), "charlie")
	if err := s.CreateNetwork(ctx, "games", "hash", a.Key); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNetwork(ctx, "work", "", b.Key); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		net string
		n   Node
	}{{"games", b}, {"work", a}} {
		if err := s.AddMember(ctx, m.net, m.n.Key); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now().Add(-time.Minute)
	s.MarkOffline(ctx, b.Key, at)

	nodes, err := s.AllNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 3 || nodes[0].Name != "alpha" || strings.Join(nodes[0].Networks, ",") != "games,work" ||
		strings.Join(nodes[1].Networks, ",") != "games,work" || nodes[2].Networks == nil || len(nodes[2].Networks) != 0 {
		t.Fatalf("nodes: %+v", nodes)
	}
	if !nodes[0].OfflineSince.IsZero() || nodes[1].OfflineSince.UnixMilli() != at.UnixMilli() {
		t.Errorf("offline since: %v, %v", nodes[0].OfflineSince, nodes[1].OfflineSince)
	}
	nets, err := s.AllNetworks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 2 || nets[0].Name != "games" || len(nets[0].Members) != 2 || nets[0].PasswordHash != "hash" ||
		string(nets[1].Owner) != string(b.Key) || len(nets[1].Members) != 2 {
		t.Fatalf("networks: %+v", nets)
	}

	// Deleting a permanent node: memberships gone, its address free for the next new node.
	if ok, err := s.DeleteNode(ctx, a.Key); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := s.DeleteNode(ctx, a.Key); ok || err != nil {
		t.Errorf("delete again: %v %v", ok, err)
	}
	if peers, _ := s.Peers(ctx, b.Key); len(peers) != 0 {
		t.Errorf("bravo still has peers: %+v", peers)
	}
	d := upsert(t, s, key(4), "delta")
	if d.IPv4 != a.IPv4 {
		t.Errorf("new node got %v, want the freed %v", d.IPv4, a.IPv4)
	}
	nets, _ = s.AllNetworks(ctx)
	if len(nets) != 2 || len(nets[0].Members) != 1 {
		t.Errorf("networks after delete: %+v", nets)
	}
}
