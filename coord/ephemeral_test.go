package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

func gone(t *testing.T, srv *Server, key []byte) bool {
	t.Helper()
	_, err := srv.cfg.Store.Node(context.Background(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err != nil
}

func TestEphemeralLogout(t *testing.T) {
	srv := startServer(t)
	a := ownerWithNetwork(t, srv)
	key := newKey(t, srv, store.AuthKeyOptions{Ephemeral: true})
	bKey, _ := identity.Generate()
	b := dialKey(t, srv, bKey)
	w, rep := b.loginAs(t, control.Login{Name: "job", AuthKey: key})
	if rep != nil || !w.Ephemeral {
		t.Fatalf("login with an ephemeral key: %+v %+v", w, rep)
	}
	a.waitDelta(t, "job online", upserts("job", true))

	// Logout: removed at once, the owner is told, the session serves nothing more.
	if rep := b.request(t, control.Request{ID: 7, Op: control.OpLogout}); rep.Code != "" {
		t.Fatalf("logout: %+v", rep)
	}
	a.waitDelta(t, "job removed", removes(bKey.Public()))
	if !gone(t, srv, bKey.Public()) {
		t.Error("node still stored after logout")
	}
	if rep := b.request(t, control.Request{ID: 8, Op: control.OpCreate, Network: "after"}); rep.Code != control.CodeRefused {
		t.Errorf("request after logout: %+v", rep)
	}

	// A permanent node's logout changes nothing.
	if rep := a.request(t, control.Request{ID: 9, Op: control.OpLogout}); rep.Code != "" {
		t.Fatalf("permanent logout: %+v", rep)
	}
	if m, _ := srv.cfg.Store.Members(context.Background(), "ci"); len(m) != 1 || m[0].Name != "owner" {
		t.Errorf("members after logouts: %+v", m)
	}
}

func TestEphemeralReaper(t *testing.T) {
	const timeout = 400 * time.Millisecond
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) { c.EphemeralTimeout = timeout })
	a := ownerWithNetwork(t, srv)

	// Two nodes ask to be ephemeral and join by password-less request; one stays online.
	bKey, _ := identity.Generate()
	b := dialKey(t, srv, bKey)
	if w, _ := b.loginAs(t, control.Login{Name: "job", Ephemeral: true}); w == nil || !w.Ephemeral {
		t.Fatalf("ephemeral login: %+v", w)
	}
	b.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"})
	cKey, _ := identity.Generate()
	c := dialKey(t, srv, cKey)
	c.loginAs(t, control.Login{Name: "steady", Ephemeral: true})
	c.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"})
	a.waitDelta(t, "job online", upserts("job", true))

	closed := time.Now() // it goes offline after this
	b.conn.CloseWithError(0, "crash")
	a.waitDelta(t, "job offline", upserts("job", false))
	a.waitDelta(t, "job removed", removes(bKey.Public()))
	took := time.Since(closed)
	t.Logf("removed %v after going offline (timeout %v)", took.Round(time.Millisecond), timeout)
	if took < timeout-10*time.Millisecond { // the store keeps milliseconds
		t.Errorf("removed after %v, before its timeout of %v", took, timeout)
	}
	if !gone(t, srv, bKey.Public()) {
		t.Error("node still stored")
	}
	// A pass as if long after: the online one stays.
	srv.reapOnce(time.Now().Add(time.Hour))
	if gone(t, srv, cKey.Public()) {
		t.Error("an online ephemeral node was removed")
	}
}

// TestEphemeralReaperSurvivesRestart: an ephemeral node goes offline, the server stops before the
// timeout; the next server on the same database removes it, and only it.
func TestEphemeralReaperSurvivesRestart(t *testing.T) {
	const timeout = 600 * time.Millisecond
	path := filepath.Join(t.TempDir(), "w.db")
	srv := startServerWith(t, path, func(c *Config) { c.EphemeralTimeout = timeout })
	a := ownerWithNetwork(t, srv)
	bKey, _ := identity.Generate()
	b := dialKey(t, srv, bKey)
	b.loginAs(t, control.Login{Name: "job", AuthKey: newKey(t, srv, store.AuthKeyOptions{Ephemeral: true})})
	b.conn.CloseWithError(0, "crash")
	a.waitDelta(t, "job offline", upserts("job", false))
	srv.Close()
	srv.cfg.Store.Close()

	srv2 := startServerWith(t, path, func(c *Config) { c.EphemeralTimeout = timeout })
	start := time.Now()
	testkit.Eventually(t, 30*time.Second, func() bool { return gone(t, srv2, bKey.Public()) },
		"the restarted server never removed the ephemeral node")
	t.Logf("removed %v after the restart (timeout %v)", time.Since(start).Round(time.Millisecond), timeout)
	if m, _ := srv2.cfg.Store.Members(context.Background(), "ci"); len(m) != 1 || m[0].Name != "owner" {
		t.Errorf("members after restart: %+v", m)
	}
}

// TestReaperBatches: more expired nodes than one batch are all removed, none left for later ticks.
func TestReaperBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	const n = 2*reapBatch + 17
	expiredStore(t, path, n, false) // the restart counts them offline from now
	srv := startServerWith(t, path, func(c *Config) { c.EphemeralTimeout = 300 * time.Millisecond })
	ctx := context.Background()
	start := time.Now()
	// Generous for a loaded CI machine. What counts is that the reaper goes on past its first batch.
	testkit.Eventually(t, 60*time.Second, func() bool {
		nodes, err := srv.cfg.Store.ExpiredEphemeral(ctx, time.Now().Add(time.Hour), n)
		if err != nil {
			t.Fatal(err)
		}
		return len(nodes) == 0
	}, "some of %d expired ephemeral nodes left", n)
	t.Logf("%d ephemeral nodes offline at start removed %v later (timeout 300ms)", n, time.Since(start).Round(time.Millisecond))
}

// TestReapBatchTellsPeers: one reaper pass removes a whole batch of expired nodes, and the online
// owner of their network is told of every one; an online ephemeral node (even one the store counts
// offline) and an offline permanent node stay.
func TestReapBatchTellsPeers(t *testing.T) {
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) { c.EphemeralTimeout = time.Hour })
	a := ownerWithNetwork(t, srv)
	ctx := context.Background()
	st := srv.cfg.Store
	now := time.Now()
	const n = reapBatch + 50
	expired := make(map[string]bool, n)
	for i := range n {
		k := make([]byte, 32)
		k[0], k[1] = byte(i), byte(i>>8)
		if _, err := st.UpsertNode(ctx, k, fmt.Sprintf("job-%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(st.AddMember(ctx, "ci", k), st.SetEphemeral(ctx, k), st.MarkOffline(ctx, k, now.Add(-time.Minute))); err != nil {
			t.Fatal(err)
		}
		expired[string(k)] = true
	}
	perm := bytes.Repeat([]byte{0xee}, 32)
	if _, err := st.UpsertNode(ctx, perm, "permanent"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(st.AddMember(ctx, "ci", perm), st.MarkOffline(ctx, perm, now.Add(-2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	cKey, _ := identity.Generate()
	c := dialKey(t, srv, cKey)
	c.loginAs(t, control.Login{Name: "steady", Ephemeral: true})
	c.request(t, control.Request{ID: 1, Op: control.OpJoin, Network: "ci"})
	a.waitDelta(t, "steady online", upserts("steady", true))
	// Only the session shows it online now: the reaper must look at sessions, not only the store.
	if err := st.MarkOffline(ctx, cKey.Public(), now); err != nil {
		t.Fatal(err)
	}

	at := now.Add(2 * time.Hour)
	for i, want := range [][2]int{{reapBatch, reapBatch}, {n - reapBatch + 1, n - reapBatch}, {1, 0}} {
		if loaded, removed := srv.reapOnce(at); loaded != want[0] || removed != want[1] {
			t.Errorf("pass %d: loaded %d, removed %d; want %d, %d", i+1, loaded, removed, want[0], want[1])
		}
	}
	a.waitDelta(t, "every expired node removed", func(d *control.PeerDelta) bool {
		for _, k := range d.Remove {
			if !expired[string(k)] {
				t.Errorf("owner told of the removal of %x", k[:4])
			}
			delete(expired, string(k))
		}
		return len(expired) == 0
	})
	for _, k := range [][]byte{perm, cKey.Public()} {
		if gone(t, srv, k) {
			t.Errorf("node %x removed", k[:4])
		}
	}
	if m, _ := st.Members(ctx, "ci"); len(m) != 3 {
		t.Errorf("%d members left, want owner, permanent, steady: %+v", len(m), m)
	}
}

// TestCloseStopsReaper: Close waits for every goroutine the server started, the reaper included.
func TestCloseStopsReaper(t *testing.T) {
	defer testkit.VerifyNone(t)()
	path := filepath.Join(t.TempDir(), "w.db")
	expiredStore(t, path, 1, false)
	srv := startServerWith(t, path, func(c *Config) { c.EphemeralTimeout = 100 * time.Millisecond })
	// The reaper has run once it removed the expired node.
	testkit.Eventually(t, 30*time.Second, func() bool { return gone(t, srv, make([]byte, 32)) }, "the reaper never ran")
	srv.Close()
	srv.cfg.Store.Close() // its database/sql goroutine counts too
}

// BenchmarkReap times the removal of 500 ephemeral nodes, offline for longer than the timeout, from
// a real SQLite file: "alone" with no networks, "network" with all of them in one network with a
// permanent owner (each removal tells the others). One op is the whole cleanup.
func BenchmarkReap(b *testing.B) {
	const n = 500
	for _, shared := range []bool{false, true} {
		name := map[bool]string{false: "alone", true: "network"}[shared]
		b.Run(name, func(b *testing.B) {
			template := filepath.Join(b.TempDir(), "template.db")
			expiredStore(b, template, n, shared)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				path := filepath.Join(b.TempDir(), fmt.Sprintf("w%d.db", i))
				copyFile(b, template, path)
				// A long timeout: the server's own ticks find nothing due; the benchmark reaps as of
				// two hours from now, when every node is overdue.
				srv := startServerWith(b, path, func(c *Config) {
					c.EphemeralTimeout = time.Hour
					c.Logger = hclog.NewNullLogger()
				})
				at := time.Now().Add(2 * time.Hour)
				b.StartTimer()
				removed := 0
				for range 2 * n {
					_, r := srv.reapOnce(at)
					if r == 0 {
						break
					}
					removed += r
				}
				b.StopTimer()
				if removed != n {
					b.Fatalf("removed %d of %d", removed, n)
				}
				srv.Close()
				srv.cfg.Store.Close()
			}
		})
	}
}

// expiredStore creates a store at path with n ephemeral nodes offline since an hour before now,
// with shared all members of network "ci" owned by a permanent node.
func expiredStore(tb testing.TB, path string, n int, shared bool) {
	tb.Helper()
	st, err := store.Open(path, store.Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")})
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	owner := bytes.Repeat([]byte{0xff}, 32)
	if shared {
		if _, err := st.UpsertNode(ctx, owner, "owner"); err != nil {
			tb.Fatal(err)
		}
		if err := st.CreateNetwork(ctx, "ci", "", owner); err != nil {
			tb.Fatal(err)
		}
	}
	offline := time.Now().Add(-time.Hour)
	for i := range n {
		k := make([]byte, 32)
		k[0], k[1] = byte(i), byte(i>>8)
		if _, err := st.UpsertNode(ctx, k, fmt.Sprintf("job-%d", i)); err != nil {
			tb.Fatal(err)
		}
		if shared {
			if err := st.AddMember(ctx, "ci", k); err != nil {
				tb.Fatal(err)
			}
		}
		if err := errors.Join(st.SetEphemeral(ctx, k), st.MarkOffline(ctx, k, offline)); err != nil {
			tb.Fatal(err)
		}
	}
}

func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}
