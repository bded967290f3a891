package coord

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// loginAs sends l and returns the Welcome (after reading the peer map) or the refusal.
func (c *client) loginAs(t *testing.T, l control.Login) (*control.Welcome, *control.Reply) {
	t.Helper()
	l.Version = control.Version
	c.stream.SetDeadline(time.Now().Add(ioTimeout))
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &l})
	m, err := control.ReadMsg(c.stream)
	if err != nil {
		t.Fatalf("login answer: %v", err)
	}
	if m.Type == control.TypeReply {
		return nil, m.Reply
	}
	if m.Type != control.TypeWelcome {
		t.Fatalf("login answer: %s", m.Type)
	}
	c.recv(t, control.TypePeerMap)
	return m.Welcome, nil
}

// waitDelta reads peer deltas until one satisfies ok.
func (c *client) waitDelta(t *testing.T, what string, ok func(*control.PeerDelta) bool) {
	t.Helper()
	for len(c.skipped) > 0 {
		m := c.skipped[0]
		c.skipped = c.skipped[1:]
		if m.Type == control.TypePeerDelta && ok(m.PeerDelta) {
			return
		}
	}
	c.stream.SetDeadline(time.Now().Add(ioTimeout))
	for {
		m, err := control.ReadMsg(c.stream)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if m.Type == control.TypePeerDelta && ok(m.PeerDelta) {
			return
		}
	}
}

func removes(key []byte) func(*control.PeerDelta) bool {
	return func(d *control.PeerDelta) bool {
		for _, k := range d.Remove {
			if bytes.Equal(k, key) {
				return true
			}
		}
		return false
	}
}

func upserts(name string, online bool) func(*control.PeerDelta) bool {
	return func(d *control.PeerDelta) bool {
		for _, p := range d.Upsert {
			if p.Name == name && p.Online == online {
				return true
			}
		}
		return false
	}
}

// ownerWithNetwork logs in a node "owner" that creates network ci.
func ownerWithNetwork(t *testing.T, srv *Server) *client {
	t.Helper()
	a := dial(t, srv)
	a.login(t, "owner")
	if rep := a.request(t, control.Request{ID: 1, Op: control.OpCreate, Network: "ci", Open: true}); rep.Code != "" {
		t.Fatalf("create: %+v", rep)
	}
	return a
}

func newKey(t *testing.T, srv *Server, o store.AuthKeyOptions) string {
	t.Helper()
	o.Network = "ci"
	_, secret, err := srv.cfg.Store.CreateAuthKey(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func TestAuthKeyLogin(t *testing.T) {
	srv := startServer(t)
	a := ownerWithNetwork(t, srv)
	single := newKey(t, srv, store.AuthKeyOptions{Tag: "ci", Expiry: time.Hour})

	// A fresh node joins ci at login, without a password, and its tag is recorded.
	bKey, _ := identity.Generate()
	b := dialKey(t, srv, bKey)
	w, rep := b.loginAs(t, control.Login{Name: "runner", AuthKey: single})
	if rep != nil || len(w.Networks) != 1 || w.Networks[0] != "ci" || w.Ephemeral {
		t.Fatalf("login with key: %+v %+v", w, rep)
	}
	a.waitDelta(t, "runner online", upserts("runner", true))
	if n, err := srv.cfg.Store.Node(context.Background(), bKey.Public()); err != nil || n.Tag != "ci" {
		t.Errorf("runner's tag: %+v %v", n, err)
	}
	// It may log in again with the key it used (a reconnect, a restart).
	b.conn.CloseWithError(0, "")
	b = dialKey(t, srv, bKey)
	if w, rep := b.loginAs(t, control.Login{Name: "runner", AuthKey: single}); rep != nil || len(w.Networks) != 1 {
		t.Fatalf("second login with the same key: %+v %+v", w, rep)
	}

	ek, expired, err := srv.cfg.Store.CreateAuthKey(context.Background(), store.AuthKeyOptions{Network: "ci", Reusable: true, Expiry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var rk store.AuthKey
	var revoked string
	rk, revoked, err = srv.cfg.Store.CreateAuthKey(context.Background(), store.AuthKeyOptions{Network: "ci", Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.cfg.Store.RevokeAuthKey(context.Background(), rk.ID)
	// Waiting out a real expiry (at most 2 s: expiries are whole seconds): the server reads the clock
	// when it redeems a key, and no store call makes a key that has already expired.
	time.Sleep(time.Until(ek.ExpiresAt))
	for _, tc := range []struct {
		key, want string
	}{
		{single, "already used"},
		{expired, "expired"},
		{revoked, "revoked"},
		{"warren-auth-nope", "invalid auth key"},
	} {
		c := dial(t, srv)
		_, rep := c.loginAs(t, control.Login{Name: "intruder", AuthKey: tc.key})
		if rep == nil || rep.Code != control.CodeAuthKey || !strings.Contains(rep.Error, tc.want) {
			t.Errorf("login with a %s key: %+v, want code %s and %q", tc.want, rep, control.CodeAuthKey, tc.want)
		}
		waitClosed(t, c)
		if len(tc.key) > 20 && strings.Contains(rep.Error, tc.key[20:]) {
			t.Errorf("refusal echoes the key's secret: %q", rep.Error)
		}
	}
	if m, _ := srv.cfg.Store.Members(context.Background(), "ci"); len(m) != 2 {
		t.Errorf("ci has %d members, want owner and runner", len(m))
	}
}
