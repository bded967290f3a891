package coord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/internal/testkit/pgtest"
)

// TestCluster runs two coords on one PostgreSQL database: nodes logged in to different coords see
// each other join, change rules, get kicked and go offline, through events and LISTEN/NOTIFY.
func TestCluster(t *testing.T) {
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	srv1 := startServerWith(t, db, func(c *Config) { c.CoordID = "c1" })
	srv2 := startServerWith(t, db, func(c *Config) { c.CoordID = "c2" })

	a := dial(t, srv1)
	a.login(t, "a")
	if rep := a.request(t, control.Request{ID: 1, Op: control.OpCreate, Network: "lan", Password: "pw"}); rep.Code != "" {
		t.Fatalf("create: %+v", rep)
	}
	b := dial(t, srv2)
	b.login(t, "b")
	if rep := b.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "lan", Password: "pw"}); rep.Code != "" {
		t.Fatalf("join: %+v", rep)
	}
	start := time.Now() // the join is done (password checked, stored); from here on it is fan-out
	// b, on the other coord, sees a online with its endpoints; a sees b.
	b.waitDelta(t, "a on the other coord", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "a" && d.Upsert[0].Online && len(d.Upsert[0].Endpoints) > 0
	})
	a.waitDelta(t, "b joined on the other coord", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "b" && d.Upsert[0].Online && len(d.Upsert[0].Endpoints) > 0
	})
	t.Logf("join on coord 2 reached coord 1's node %v after the reply", time.Since(start))

	// Rules set on coord 1 reach b on coord 2.
	start = time.Now()
	rules := []control.ACLRule{{From: []string{"a"}, To: []string{"*"}, Ports: []string{"*"}}}
	if rep := a.request(t, control.Request{ID: 2, Op: control.OpACLSet, Network: "lan", Rules: rules}); rep.Code != "" {
		t.Fatalf("set rules: %+v", rep)
	}
	b.waitDelta(t, "rules from the other coord", hasACL("lan", 1))
	t.Logf("rule change on coord 1 reached coord 2's node in %v", time.Since(start))

	// The LISTEN connections die: events published meanwhile are read by ID once they reconnect.
	if out, err := pg.Exec("t1", "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'warren-listen'"); err != nil || out != "2" {
		t.Fatalf("terminated %q listen connections: %v", out, err)
	}
	// The kick on coord 1 reaches b on coord 2: it loses a and the network.
	start = time.Now()
	if rep := a.request(t, control.Request{ID: 3, Op: control.OpKick, Network: "lan", Target: "b"}); rep.Code != "" {
		t.Fatalf("kick: %+v", rep)
	}
	removed, left := false, false
	b.waitDelta(t, "kicked on the other coord", func(d *control.PeerDelta) bool {
		removed = removed || len(d.Remove) == 1
		left = left || d.Networks != nil && len(d.Networks.Names) == 0
		return removed && left
	})
	t.Logf("kick on coord 1 (listen connections dropped) reached coord 2's node in %v", time.Since(start))

	// A join request made on coord 2 reaches the network's owner on coord 1.
	if rep := a.request(t, control.Request{ID: 5, Op: control.OpCreate, Network: "club", Approval: true}); rep.Code != "" {
		t.Fatalf("create club: %+v", rep)
	}
	if rep := b.request(t, control.Request{ID: 5, Op: control.OpJoin, Network: "club"}); rep.Code != control.CodePending {
		t.Fatalf("join club: %+v", rep)
	}
	a.waitDelta(t, "the join request made on the other coord", func(d *control.PeerDelta) bool {
		return d.Joins != nil && len(d.Joins.Requests) == 1 && d.Joins.Requests[0].Name == "b"
	})

	// b joins again and logs out: a sees it offline.
	if rep := b.request(t, control.Request{ID: 6, Op: control.OpJoin, Network: "lan", Password: "pw"}); rep.Code != "" {
		t.Fatalf("join again: %+v", rep)
	}
	a.waitDelta(t, "b back", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "b" && d.Upsert[0].Online
	})
	b.conn.CloseWithError(0, "bye")
	a.waitDelta(t, "b offline", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "b" && !d.Upsert[0].Online
	})

	// A node moves from coord 1 to coord 2: coord 1 ends its old session (and its relay binding)
	// without clearing the presence coord 2 recorded, and a sees it online on coord 2.
	mk, _ := identity.Generate()
	m1 := dialKey(t, srv1, mk)
	m1.login(t, "m")
	if rep := m1.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "lan", Password: "pw"}); rep.Code != "" {
		t.Fatalf("m joins: %+v", rep)
	}
	a.waitDelta(t, "m online", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "m" && d.Upsert[0].Online
	})
	m2 := dialKey(t, srv2, mk)
	m2.login(t, "m")
	waitClosed(t, m1)
	testkit.Eventually(t, 30*time.Second, func() bool { return srv1.OnlineCount() == 1 }, "coord 1 kept m's old session")
	p, err := srv1.cfg.Store.PresenceOf(context.Background(), mk.Public())
	if err != nil || p.Coord != "c2" {
		t.Fatalf("m's presence after the move: %+v, %v", p, err)
	}
	if _, ok := srv1.cluster.remoteOnline(keyOf(mk.Public())); !ok {
		t.Error("coord 1 does not count m online on coord 2")
	}

	// The operator removes m through coord 1 while it is on coord 2: coord 2 ends its session and
	// its presence, and a loses it.
	if _, err := srv1.RemoveNode(context.Background(), mk.Public()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, m2)
	a.waitDelta(t, "m removed", func(d *control.PeerDelta) bool { return len(d.Remove) == 1 })
	testkit.Eventually(t, 30*time.Second, func() bool {
		_, err := srv1.cfg.Store.PresenceOf(context.Background(), mk.Public())
		return errors.Is(err, store.ErrNotFound)
	}, "m's presence outlived it")
}
