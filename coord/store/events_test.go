package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEvents(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	if id, err := s.LastEventID(ctx); err != nil || id != 0 {
		t.Fatalf("LastEventID of an empty store = %d, %v", id, err)
	}
	var ids []int64
	for i, kind := range []string{EventNode, EventACL, EventGone} {
		id, err := s.Publish(ctx, "lan", kind, strings.Repeat("x", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !(ids[0] < ids[1] && ids[1] < ids[2]) {
		t.Fatalf("IDs %v not increasing", ids)
	}
	if _, err := s.Publish(ctx, "", EventNode, strings.Repeat("x", MaxEventPayload+1)); err == nil {
		t.Error("an oversized payload was published")
	}
	evs, err := s.EventsAfter(ctx, ids[0], 10)
	if err != nil || len(evs) != 2 || evs[0].ID != ids[1] || evs[0].Kind != EventACL || evs[1].Payload != "xx" || evs[1].Network != "lan" {
		t.Fatalf("EventsAfter = %+v, %v", evs, err)
	}
	if evs, _ := s.EventsAfter(ctx, 0, 1); len(evs) != 1 || evs[0].ID != ids[0] {
		t.Fatalf("EventsAfter with limit 1 = %+v", evs)
	}
	if last, _ := s.LastEventID(ctx); last != ids[2] {
		t.Fatalf("LastEventID = %d, want %d", last, ids[2])
	}
	if n, err := s.PruneEvents(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("pruning nothing: %d, %v", n, err)
	}
	if n, err := s.PruneEvents(ctx, time.Now().Add(time.Second)); err != nil || n != 3 {
		t.Fatalf("pruning all: %d, %v", n, err)
	}
	// IDs keep increasing after a prune: a coord's last-seen ID stays valid.
	if id, err := s.Publish(ctx, "", EventNode, ""); err != nil || id <= ids[2] {
		t.Fatalf("after prune: ID %d, %v", id, err)
	}
}

func TestPresence(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	t0 := time.UnixMilli(1_700_000_000_000)
	if _, err := s.PresenceOf(ctx, key(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("presence of an unknown node: %v", err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetPresence(ctx, key(1), "c1", "e1", t0))
	must(s.SetPresence(ctx, key(1), "c1", "e2", t0.Add(time.Second)))
	p, err := s.PresenceOf(ctx, key(1))
	if err != nil || p.Coord != "c1" || !p.Since.Equal(t0) || !p.Heartbeat.Equal(t0.Add(time.Second)) || p.Endpoints != "e2" {
		t.Fatalf("presence = %+v, %v", p, err)
	}
	// Moving to another coord restarts since; the old coord cannot clear it any more.
	must(s.SetPresence(ctx, key(1), "c2", "e3", t0.Add(2*time.Second)))
	if ok, err := s.ClearPresence(ctx, key(1), "c1"); err != nil || ok {
		t.Fatalf("old coord cleared a moved node: %v, %v", ok, err)
	}
	if p, _ := s.PresenceOf(ctx, key(1)); p.Coord != "c2" || !p.Since.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("after the move: %+v", p)
	}
	must(s.SetPresence(ctx, key(2), "c1", "", t0))
	must(s.SetPresence(ctx, key(3), "c2", "", t0))
	if all, err := s.Presences(ctx); err != nil || len(all) != 3 {
		t.Fatalf("Presences = %+v, %v", all, err)
	}

	must(s.CoordHeartbeat(ctx, "c1", "192.0.2.1:7400", t0))
	must(s.CoordHeartbeat(ctx, "c2", "192.0.2.2:7400", t0))
	must(s.CoordHeartbeat(ctx, "c1", "192.0.2.1:7400", t0.Add(time.Minute)))
	cs, err := s.Coords(ctx)
	if err != nil || len(cs) != 2 || cs[0].ID != "c1" || !cs[0].Heartbeat.Equal(t0.Add(time.Minute)) || cs[1].Addr != "192.0.2.2:7400" {
		t.Fatalf("Coords = %+v, %v", cs, err)
	}
	keys, err := s.RemoveCoord(ctx, "c2")
	if err != nil || len(keys) != 2 {
		t.Fatalf("RemoveCoord = %x, %v", keys, err)
	}
	if all, _ := s.Presences(ctx); len(all) != 1 || all[0].Coord != "c1" {
		t.Fatalf("after RemoveCoord: %+v", all)
	}
	if cs, _ := s.Coords(ctx); len(cs) != 1 {
		t.Fatalf("coords after RemoveCoord: %+v", cs)
	}
	if ok, err := s.ClearPresence(ctx, key(2), "c1"); err != nil || !ok {
		t.Fatalf("ClearPresence = %v, %v", ok, err)
	}
}

// TestListen shows Listen waking its caller on a notification and again (reconnected) after its
// connection is terminated.
func TestListen(t *testing.T) {
	s := open(t, tempDB(t), testPools)
	wakes := make(chan bool, 16)
	errs := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Listen(ctx, time.Hour, func(r bool) { wakes <- r }, func(err error) { errs <- err })
	}()
	defer func() { cancel(); <-done }()
	next := func(what string) bool {
		t.Helper()
		select {
		case r := <-wakes:
			return r
		case <-time.After(30 * time.Second):
			t.Fatalf("no wake-up: %s", what)
			return false
		}
	}
	if !next("connected") {
		t.Fatal("first wake-up is not a (re)connection")
	}
	if !s.Postgres() {
		return // SQLite only polls
	}
	if _, err := s.Publish(context.Background(), "", EventNode, "x"); err != nil {
		t.Fatal(err)
	}
	if next("notification") {
		t.Fatal("a notification woke us as a reconnection")
	}
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ?`, ListenApplication).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d listen connections, %v", n, err)
	}
	if !next("reconnected") {
		t.Fatal("no reconnection wake-up after the connection was terminated")
	}
	select {
	case err := <-errs:
		t.Logf("reported: %v", err)
	default:
		t.Error("the dropped connection was not reported")
	}
}

// TestWriteCluster: a batch applies presence changes and events in order in one transaction; a
// refresh leaves a node that moved to another coord alone, and a clear that removes nothing
// publishes nothing.
func TestWriteCluster(t *testing.T) {
	ctx := context.Background()
	s := open(t, tempDB(t), testPools)
	t0 := time.UnixMilli(1_700_000_000_000)
	ev := func(k byte) (bool, string, string, string) { return true, "", EventNode, fmt.Sprintf("c1 %02x", k) }
	w := func(op PresenceOp, k byte, coord, eps string, event bool) ClusterWrite {
		cw := ClusterWrite{Presence: op, Key: key(k), Coord: coord, Endpoints: eps, At: t0}
		if event {
			cw.Event, cw.Network, cw.Kind, cw.Payload = ev(k)
		}
		return cw
	}
	if err := s.WriteCluster(ctx, []ClusterWrite{
		w(PresenceSet, 1, "c1", "e1", true),
		w(PresenceSet, 2, "c2", "e2", false),  // node 2 is on c2 ...
		w(PresenceUpdate, 2, "c1", "x", true), // ... so c1's late refresh changes nothing (its event goes out)
		w(PresenceClear, 2, "c1", "", true),   // nor does c1's clear, whose event does not
		w(PresenceUpdate, 1, "c1", "e1b", false),
		w(PresenceClear, 3, "c1", "", true), // nothing to clear: no event
	}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.PresenceOf(ctx, key(1)); err != nil || p.Coord != "c1" || p.Endpoints != "e1b" {
		t.Errorf("node 1: %+v, %v", p, err)
	}
	if p, err := s.PresenceOf(ctx, key(2)); err != nil || p.Coord != "c2" || p.Endpoints != "e2" {
		t.Errorf("node 2: %+v, %v", p, err)
	}
	evs, err := s.EventsAfter(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var payloads []string
	for _, e := range evs {
		payloads = append(payloads, e.Payload)
	}
	if want := []string{"c1 01", "c1 02"}; !slices.Equal(payloads, want) {
		t.Errorf("events %q, want %q", payloads, want)
	}
	if err := s.WriteCluster(ctx, []ClusterWrite{w(PresenceClear, 1, "c1", "", true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PresenceOf(ctx, key(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("node 1 after its clear: %v", err)
	}
	if evs, _ := s.EventsAfter(ctx, evs[len(evs)-1].ID, 10); len(evs) != 1 || evs[0].Payload != "c1 01" {
		t.Errorf("events after the clear: %+v", evs)
	}
}
