package coord

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// A first login refused after registration (a bad auth key) leaves no node; the same key refused
// again after a completed login stays.
func TestRefusedFirstLoginLeavesNoNode(t *testing.T) {
	srv := startServer(t)
	key := mustKey(t)
	c := dialKey(t, srv, key)
	_, rep := c.loginAs(t, control.Login{Name: "job", AuthKey: "warren-auth-0123456789ab-" + fmt.Sprintf("%064x", 1)})
	if rep == nil || rep.Code != control.CodeAuthKey {
		t.Fatalf("login with a bad auth key: %+v", rep)
	}
	// The node is deleted before the refusal is sent.
	if _, err := srv.cfg.Store.Node(context.Background(), key.Public()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("node after a refused first login: %v, want not found", err)
	}

	// A node that logged in once is kept when a later login is refused.
	c = dialKey(t, srv, key)
	c.login(t, "job")
	c.conn.CloseWithError(0, "")
	c = dialKey(t, srv, key)
	if _, rep := c.loginAs(t, control.Login{Name: "job", AuthKey: "warren-auth-0123456789ab-" + fmt.Sprintf("%064x", 2)}); rep == nil {
		t.Fatal("bad auth key accepted")
	}
	if n, err := srv.cfg.Store.Node(context.Background(), key.Public()); err != nil || !n.LoginDone {
		t.Errorf("known node after a refused login: %+v %v", n, err)
	}
}

// A full disk is "storage full" with the transient code, anything else an internal error.
func TestStoreErrorCodes(t *testing.T) {
	srv := startServer(t)
	full := srv.storeError("register node", fmt.Errorf("upsert: %w", syscall.ENOSPC))
	var cerr *control.Error
	if !errors.As(full, &cerr) || cerr.Code != control.CodeStorageFull || !cerr.Code.Transient() {
		t.Errorf("disk full answered %v", full)
	}
	other := srv.storeError("register node", errors.New("database disk image is malformed"))
	if !errors.As(other, &cerr) || cerr.Code != control.CodeInternal {
		t.Errorf("other store error answered %v", other)
	}
}
