package coord

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

func TestRemoveNode(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	a := ownerWithNetwork(t, srv)
	bKey, _ := identity.Generate()
	b := dialKey(t, srv, bKey)
	key := newKey(t, srv, store.AuthKeyOptions{Reusable: true})
	w, rep := b.loginAs(t, control.Login{Name: "victim", AuthKey: key})
	if rep != nil {
		t.Fatalf("login: %+v", rep)
	}
	a.waitDelta(t, "victim online", upserts("victim", true))

	on := srv.Online()
	if o, ok := on[string(bKey.Public())]; !ok || o.Observed.Addr() != netip.MustParseAddr("127.0.0.1") || time.Since(o.Since) > time.Minute || len(on) != 2 {
		t.Fatalf("online: %+v", on)
	}

	r, err := srv.RemoveNode(ctx, bKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !r.WasOnline || r.PeersTold != 1 || r.Node.Name != "victim" || r.Node.IPv4 != w.IPv4 {
		t.Errorf("removed: %+v", r)
	}
	// The peer is told it is gone (a removal, not an offline upsert); the node is disconnected and
	// deleted, memberships and all.
	a.waitDelta(t, "victim removed", removes(bKey.Public()))
	waitClosed(t, b)
	if !gone(t, srv, bKey.Public()) {
		t.Error("node still stored")
	}
	if m, _ := srv.cfg.Store.Members(ctx, "ci"); len(m) != 1 {
		t.Errorf("members: %+v", m)
	}
	if _, ok := srv.Online()[string(bKey.Public())]; ok {
		t.Error("still listed online")
	}
	if _, err := srv.RemoveNode(ctx, bKey.Public()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing it again: %v", err)
	}

	// Logging in again makes it a new node in no network, on the freed address.
	b2 := dialKey(t, srv, bKey)
	w2 := b2.login(t, "victim")
	if len(w2.Networks) != 0 || w2.IPv4 != w.IPv4 {
		t.Errorf("after removal: %+v", w2)
	}
}
