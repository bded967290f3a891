package coord

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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

func TestBlockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	if e, err := ReadBlockFile(path); err != nil || len(e) != 0 {
		t.Fatalf("missing file: %v %v", e, err)
	}
	if _, err := ReadBlockFile(""); err == nil {
		t.Error("no file name accepted")
	}
	os.WriteFile(path, []byte("# operator's list\n10.0.0.0/8 # spam\n\n2001:db8::1\n"), 0o640)
	for _, tc := range []struct {
		entry, comment string
		changed        bool
	}{
		{"192.0.2.7", "one host", true},
		{"198.51.100.9/24", "", true}, // masked on the way in
		{"10.1.2.3/8", "again", false},
		{"2001:db8::1/128", "", false},
	} {
		p, err := ParseBlockPrefix(tc.entry)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := AddBlock(path, p, tc.comment); err != nil || changed != tc.changed {
			t.Errorf("add %s: %v %v, want changed %v", tc.entry, changed, err, tc.changed)
		}
	}
	if _, err := AddBlock(path, netip.MustParsePrefix("192.0.2.8/32"), "two\n10.9.9.9"); err == nil {
		t.Error("a comment with a newline was accepted")
	}
	if err := RemoveBlock(path, netip.MustParsePrefix("10.0.0.0/8")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveBlock(path, netip.MustParsePrefix("10.0.0.0/8")); !errors.Is(err, ErrNotBlocked) {
		t.Errorf("remove twice: %v", err)
	}
	data, _ := os.ReadFile(path)
	want := "# operator's list\n\n2001:db8::1\n192.0.2.7 # one host\n198.51.100.0/24\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want kept 0640", fi.Mode())
	}
	got, err := ReadBlockFile(path)
	if err != nil || len(got) != 3 || got[1].Comment != "one host" || got[2].Prefix.String() != "198.51.100.0/24" {
		t.Errorf("read: %+v %v", got, err)
	}
	// The server parses what the tools write.
	if b, err := parseBlockList(data); err != nil || !b.contains(netip.MustParseAddr("198.51.100.200")) || b.contains(netip.MustParseAddr("10.0.0.1")) {
		t.Errorf("server's view: %v", err)
	}
	os.WriteFile(path, []byte("10.0.0.0/8\nnot an address\n"), 0o600)
	if _, err := ReadBlockFile(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := AddBlock(path, netip.MustParsePrefix("192.0.2.8/32"), ""); err == nil {
		t.Error("edited a file with a bad line")
	}
	for _, bad := range []string{"", "10.0.0.0/33", "::ffff:10.0.0.0/104", "host.example", "10.0.0.1%eth0/8"} {
		if _, err := ParseBlockPrefix(bad); err == nil {
			t.Errorf("ParseBlockPrefix(%q) succeeded", bad)
		}
	}
}
