package coord

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/internal/testkit/pgtest"
)

// startCluster starts two coords, c1 and c2, on one throwaway PostgreSQL database.
func startCluster(t *testing.T) (*pgtest.Server, *Server, *Server) {
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	return pg, startServerWith(t, db, func(c *Config) { c.CoordID = "c1" }), startServerWith(t, db, func(c *Config) { c.CoordID = "c2" })
}

// loggedIn logs a new node called name in to srv and makes the request q, which must succeed.
func loggedIn(t *testing.T, srv *Server, name string, q control.Request) *client {
	t.Helper()
	c := dial(t, srv)
	c.login(t, name)
	if rep := c.request(t, q); rep.Code != "" {
		t.Fatalf("%s: %+v", q.Op, rep)
	}
	return c
}

// TestCluster runs two coords on one PostgreSQL database: nodes logged in to different coords see
// each other join, change rules, get kicked and go offline, through events and LISTEN/NOTIFY.
func TestCluster(t *testing.T) {
	pg, srv1, srv2 := startCluster(t)
	a := loggedIn(t, srv1, "a", control.Request{ID: 1, Op: control.OpCreate, Network: "lan", Password: "pw"})
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

// TestCatchUpInBatches: events about many nodes that arrive together are applied with a few
// batched store reads, not three queries per event: one at a time, a coord fell behind the other's
// endpoint changes at 10,000 nodes (fan-out p99 of 13 s and events counted missed by the load
// test). One of the nodes is a local node's peer, which hears of its change.
func TestCatchUpInBatches(t *testing.T) {
	_, srv1, srv2 := startCluster(t)
	a := loggedIn(t, srv2, "a", control.Request{ID: 1, Op: control.OpCreate, Network: "lan", Open: true})
	bkey, _ := identity.Generate()
	b := dialKey(t, srv1, bkey)
	b.login(t, "b")
	if rep := b.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "lan"}); rep.Code != "" {
		t.Fatalf("join: %+v", rep)
	}
	a.waitDelta(t, "b online", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "b" && d.Upsert[0].Online
	})
	cl := srv2.cluster
	cl.mu.Lock()
	handled, batches := cl.events, cl.batches
	cl.mu.Unlock()

	// 600 events in one commit, as coord 1 writes a busy moment's: b's endpoints change among 599
	// other nodes' (unknown here: resync finds them gone, which costs the same reads).
	const n = 600
	var ws []store.ClusterWrite
	for i := range n - 1 {
		ws = append(ws, store.ClusterWrite{Event: true, Kind: store.EventNode, Payload: srv1.cluster.payload(bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 11)[:32])})
	}
	bk := bkey.Public()
	eps := `{"e":["198.18.0.1:40000"]}`
	ws = append(ws, store.ClusterWrite{Presence: store.PresenceUpdate, Key: bk, Coord: "c1", Endpoints: eps, At: time.Now(),
		Event: true, Kind: store.EventNode, Payload: srv1.cluster.payload(bk)})
	if err := srv1.cfg.Store.WriteCluster(context.Background(), ws); err != nil {
		t.Fatal(err)
	}
	a.waitDelta(t, "b's new endpoint", func(d *control.PeerDelta) bool {
		return len(d.Upsert) == 1 && d.Upsert[0].Name == "b" && slices.Contains(d.Upsert[0].Endpoints, netip.MustParseAddrPort("198.18.0.1:40000"))
	})
	testkit.Eventually(t, 10*time.Second, func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.events-handled >= n
	}, "coord 2 did not handle the events")
	cl.mu.Lock()
	defer cl.mu.Unlock()
	// 600 events are read as 256 + 256 + 88 (eventBatch): one resync batch each. Other events the
	// coord handled meanwhile (a heartbeat's, the join's tail on a loaded machine) may each have come
	// in a batch of their own; one at a time, the 600 would have taken 600.
	other := cl.events - handled - n
	if got := cl.batches - batches; got > 3+other {
		t.Errorf("%d events (and %d others) took %d resync batches, want at most %d", n, other, got, 3+other)
	}
}
