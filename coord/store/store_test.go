package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var testPools = Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func tinyPools(v4 string) Pools {
	return Pools{V4: netip.MustParsePrefix(v4), V6: testPools.V6}
}

func open(t *testing.T, path string, pools Pools) *Store {
	t.Helper()
	s, err := Open(path, pools)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tempDB returns a fresh database: a SQLite file, or a new PostgreSQL database while
// TestPostgres runs the tests against its server.
func tempDB(t *testing.T) string {
	if pgServer != nil {
		return pgServer.NewDatabase(t)
	}
	return filepath.Join(t.TempDir(), "warren.db")
}

func upsert(t *testing.T, s *Store, k []byte, name string) Node {
	t.Helper()
	n, err := s.UpsertNode(context.Background(), k, name)
	if err != nil {
		t.Fatalf("UpsertNode(%x, %q): %v", k[:1], name, err)
	}
	return n
}

func TestOpenValidatesPools(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name  string
		pools Pools
		ok    bool
	}{
		{"default", testPools, true},
		{"unmasked", Pools{V4: p("100.64.1.2/10"), V6: p("fd7a:7761:7272::5/48")}, true},
		{"v4 /30", Pools{V4: p("10.0.0.0/30"), V6: p("fd00::/126")}, true},
		{"v4 /31", Pools{V4: p("10.0.0.0/31"), V6: testPools.V6}, false},
		{"v4 /32", Pools{V4: p("10.0.0.1/32"), V6: testPools.V6}, false},
		{"zero", Pools{}, false},
		{"v4 missing", Pools{V6: testPools.V6}, false},
		{"v6 missing", Pools{V4: testPools.V4}, false},
		{"v4 is v6", Pools{V4: p("fd00::/64"), V6: testPools.V6}, false},
		{"v6 is v4", Pools{V4: testPools.V4, V6: p("10.0.0.0/8")}, false},
		{"v6 is v4-mapped", Pools{V4: testPools.V4, V6: p("::ffff:10.0.0.0/104")}, false},
		{"v6 smaller than v4", Pools{V4: p("10.0.0.0/24"), V6: p("fd00::/121")}, false},
		{"v6 as large as v4", Pools{V4: p("10.0.0.0/24"), V6: p("fd00::/120")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tempDB(t), tt.pools)
			if (err == nil) != tt.ok {
				t.Fatalf("Open(%v) error = %v, want ok=%v", tt.pools, err, tt.ok)
			}
			if err == nil {
				if got := s.Pools(); got.V4 != tt.pools.V4.Masked() || got.V6 != tt.pools.V6.Masked() {
					t.Errorf("Pools() = %v, want masked %v", got, tt.pools)
				}
				s.Close()
			}
		})
	}
}

func TestFileMode(t *testing.T) {
	path := tempDB(t)
	s := open(t, path, testPools)
	upsert(t, s, key(1), "a") // forces the WAL file into existence
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPathNeedsEscaping(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir%41")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "w?mode=ro#x%20.db")
	s := open(t, path, testPools)
	a := upsert(t, s, key(1), "a")
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files in dir: %q, want only the database", names)
	}
	s = open(t, path, testPools)
	if n, err := s.Node(context.Background(), key(1)); err != nil || n.IPv4 != a.IPv4 {
		t.Errorf("after reopen: %+v, %v", n, err)
	}
}

func TestStableAddressesAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s := open(t, path, testPools)
	a := upsert(t, s, key(1), "a")
	b := upsert(t, s, key(2), "b")
	if a.IPv4 != netip.MustParseAddr("100.64.0.1") || a.IPv6 != netip.MustParseAddr("fd7a:7761:7272::1") {
		t.Errorf("first node got %v %v", a.IPv4, a.IPv6)
	}
	if b.IPv4 != netip.MustParseAddr("100.64.0.2") || b.IPv6 != netip.MustParseAddr("fd7a:7761:7272::2") {
		t.Errorf("second node got %v %v", b.IPv4, b.IPv6)
	}
	if a.CreatedAt.IsZero() || a.LastSeen.Before(a.CreatedAt) || !bytes.Equal(a.Key, key(1)) {
		t.Errorf("first node: %+v", a)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path, testPools)
	got, err := s.Node(ctx, key(2))
	if err != nil || got.IPv4 != b.IPv4 || got.IPv6 != b.IPv6 || got.Name != "b" {
		t.Errorf("Node after reopen: %+v, %v; before %+v", got, err, b)
	}
	a2 := upsert(t, s, key(1), "renamed") // a login's name does not rename a known node
	if a2.IPv4 != a.IPv4 || a2.IPv6 != a.IPv6 || a2.Name != "a" || !a2.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("after reopen: %+v, before %+v", a2, a)
	}
	if c := upsert(t, s, key(3), "c"); c.IPv4 != netip.MustParseAddr("100.64.0.3") {
		t.Errorf("third node got %v", c.IPv4)
	}
}

func TestUpsertNodeRejects(t *testing.T) {
	s := open(t, tempDB(t), testPools)
	ctx := context.Background()
	tests := []struct {
		name string
		key  []byte
		node string
	}{
		{"short key", make([]byte, 31), "a"},
		{"long key", make([]byte, 33), "a"},
		{"nil key", nil, "a"},
		{"bad name", key(1), "Bad_Name"},
		{"empty name", key(1), ""},
	}
	for _, tt := range tests {
		if _, err := s.UpsertNode(ctx, tt.key, tt.node); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, err := s.Node(ctx, key(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Node of a rejected key: %v, want ErrNotFound", err)
	}
}

func TestAllocation(t *testing.T) {
	tests := []struct {
		name  string
		pools Pools
		want  []string // IPv4 of successive new nodes; "" = ErrPoolExhausted
	}{
		{"/30 holds one", tinyPools("10.9.0.0/30"), []string{"10.9.0.1", "", ""}},
		{"/29 skips the DNS and broadcast addresses", tinyPools("10.9.0.8/29"), []string{"10.9.0.9", "10.9.0.10", "10.9.0.11", "10.9.0.12", "10.9.0.13", ""}},
		{"crosses a byte", tinyPools("10.9.0.0/23"), nil}, // checked below
	}
	for _, tt := range tests[:2] {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, tempDB(t), tt.pools)
			for i, want := range tt.want {
				n, err := s.UpsertNode(context.Background(), key(byte(i+1)), fmt.Sprintf("n%d", i))
				if want == "" {
					if !errors.Is(err, ErrPoolExhausted) {
						t.Errorf("node %d: %v, want ErrPoolExhausted", i, err)
					}
					continue
				}
				if err != nil || n.IPv4.String() != want {
					t.Errorf("node %d: %v %v, want %s", i, n.IPv4, err, want)
				}
			}
			// A known node can still log in when the pool is full.
			if n, err := s.UpsertNode(context.Background(), key(1), "again"); err != nil || n.IPv4.String() != tt.want[0] {
				t.Errorf("known node in a full pool: %v %v", n.IPv4, err)
			}
		})
	}
	t.Run(tests[2].name, func(t *testing.T) {
		s := open(t, tempDB(t), Pools{V4: netip.MustParsePrefix("10.9.0.0/23"), V6: netip.MustParsePrefix("fd00::/64")})
		var last Node
		for i := range 256 {
			last = upsert(t, s, []byte(fmt.Sprintf("%032d", i)), "n")
		}
		if last.IPv4.String() != "10.9.1.0" || last.IPv6.String() != "fd00::100" {
			t.Errorf("node 256: %v %v", last.IPv4, last.IPv6)
		}
	})
}

func TestAllocationFillsGaps(t *testing.T) {
	s := open(t, tempDB(t), testPools)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		upsert(t, s, key(byte(i)), "n")
	}
	// Nodes that never completed a login free their addresses at once: holes below the floor.
	for _, i := range []byte{4, 1, 3} {
		if ok, err := s.DeleteUnfinished(ctx, key(i)); err != nil || !ok {
			t.Fatalf("delete node %d: %v %v", i, ok, err)
		}
	}
	for i, want := range []string{"100.64.0.1", "100.64.0.3", "100.64.0.4", "100.64.0.6"} {
		n, err := s.UpsertNode(ctx, key(byte(10+i)), "m")
		if err != nil || n.IPv4.String() != want {
			t.Errorf("new node %d: %v %v, want %s", i, n.IPv4, err, want)
		}
	}
}

func TestConcurrentUpsert(t *testing.T) {
	path := tempDB(t)
	// Two stores on one file stand in for two processes; writes must not collide or fail busy.
	stores := []*Store{open(t, path, testPools), open(t, path, testPools)}
	const n = 40
	nodes := make([]Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = stores[i%2].UpsertNode(context.Background(), key(byte(i+1)), fmt.Sprintf("n%d", i))
		}()
	}
	wg.Wait()
	seen4, seen6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if seen4[nd.IPv4] || seen6[nd.IPv6] {
			t.Errorf("node %d got a duplicate address %v %v", i, nd.IPv4, nd.IPv6)
		}
		seen4[nd.IPv4], seen6[nd.IPv6] = true, true
		if !testPools.V4.Contains(nd.IPv4) || nd.IPv4.As4()[3] > n {
			t.Errorf("node %d: %v not among the lowest %d", i, nd.IPv4, n)
		}
	}
	// One new node's first login on both at once (a node that moved between coords mid-login):
	// one registration, the same address for both.
	var twice [2]Node
	for i := range twice {
		wg.Add(1)
		go func() {
			defer wg.Done()
			twice[i], errs[i] = stores[i].UpsertNode(context.Background(), key(n+1), "late")
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("same key on both stores: %v, %v", errs[0], errs[1])
	}
	if twice[0].IPv4 != twice[1].IPv4 || twice[0].IPv4.As4()[3] != n+1 {
		t.Errorf("same key on both stores got %v and %v, want both the next address", twice[0].IPv4, twice[1].IPv4)
	}
}

func TestPoolsChange(t *testing.T) {
	p := netip.MustParsePrefix
	path := tempDB(t)
	s := open(t, path, Pools{V4: p("10.1.0.0/24"), V6: p("fd00::/64")})
	for i := 1; i <= 3; i++ {
		upsert(t, s, key(byte(i)), "n")
	}
	s.Close()
	tests := []struct {
		name  string
		pools Pools
		ok    bool
	}{
		{"same", Pools{V4: p("10.1.0.0/24"), V6: p("fd00::/64")}, true},
		{"v4 grown", Pools{V4: p("10.1.0.0/16"), V6: p("fd00::/64")}, true},
		{"v4 shrunk, nodes fit", Pools{V4: p("10.1.0.0/29"), V6: p("fd00::/64")}, true},
		{"v4 shrunk too far", Pools{V4: p("10.1.0.0/30"), V6: p("fd00::/64")}, false},
		{"v4 moved", Pools{V4: p("10.2.0.0/24"), V6: p("fd00::/64")}, false},
		{"v6 moved", Pools{V4: p("10.1.0.0/24"), V6: p("fd01::/64")}, false},
		{"back to the start", Pools{V4: p("10.1.0.0/24"), V6: p("fd00::/64")}, true},
	}
	for _, tt := range tests {
		s, err := Open(path, tt.pools)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Open error = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err == nil {
			if n, err := s.Node(context.Background(), key(3)); err != nil || n.IPv4.String() != "10.1.0.3" {
				t.Errorf("%s: node 3 at %v, %v", tt.name, n.IPv4, err)
			}
			s.Close()
		}
	}

	// Without nodes, the pools may move freely.
	empty := tempDB(t)
	open(t, empty, testPools).Close()
	open(t, empty, Pools{V4: p("10.2.0.0/24"), V6: p("fd01::/64")}).Close()
}

func TestMigrations(t *testing.T) {
	// A database as each earlier release left it (its migrations only, one node and, from version 2
	// on, the recorded pools) opens, migrates to the current version and keeps the node.
	for from := 1; from < len(migrations); from++ {
		t.Run(fmt.Sprintf("from version %d", from), func(t *testing.T) {
			path := tempDB(t)
			db, err := sql.Open("sqlite", dsn(path))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range migrations[:from] {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			stmts := []string{`INSERT INTO nodes (key, name, ip_index, created_at, last_seen) VALUES (x'` +
				strings.Repeat("01", 32) + `', 'a', 1, 1, 1)`, fmt.Sprintf(`PRAGMA user_version = %d`, from)}
			if from >= 2 {
				stmts = append(stmts, `INSERT INTO settings (name, value) VALUES ('pool4', '`+testPools.V4.String()+`'), ('pool6', '`+testPools.V6.String()+`')`)
			}
			for _, q := range stmts {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()

			s := open(t, path, testPools)
			var v int
			if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != len(migrations) {
				t.Fatalf("user_version = %d, %v; want %d", v, err, len(migrations))
			}
			if n, err := s.Node(context.Background(), key(1)); err != nil || n.Name != "a" || n.IPv4.String() != "100.64.0.1" || n.Ephemeral || n.Tag != "" || !n.LoginDone {
				t.Errorf("node after migration: %+v %v", n, err)
			}
			var pool4 string
			if err := s.db.QueryRow(`SELECT value FROM settings WHERE name = 'pool4'`).Scan(&pool4); err != nil || pool4 != testPools.V4.String() {
				t.Errorf("recorded pool4 = %q, %v", pool4, err)
			}
			// The tables of later migrations work.
			if _, err := s.AuthKeys(context.Background()); err != nil {
				t.Errorf("auth keys after migration: %v", err)
			}
		})
	}

	// A database from a newer server is refused.
	path := tempDB(t)
	s := open(t, path, testPools)
	if _, err := s.db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, testPools); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("newer schema: %v", err)
	}
}

func TestOpenRecordedPools(t *testing.T) {
	path := tempDB(t)
	p := Pools{V4: netip.MustParsePrefix("10.9.0.0/16"), V6: netip.MustParsePrefix("fd00:9::/64")}
	s := open(t, path, p)
	upsert(t, s, key(1), "a")
	// A tool opens the same file with zero pools while the server still has it open: it sees the
	// server's pools and addresses, and changes nothing.
	tool := open(t, path, Pools{})
	if tool.Pools() != p {
		t.Errorf("recorded pools %v, want %v", tool.Pools(), p)
	}
	if n, err := tool.Node(context.Background(), key(1)); err != nil || n.IPv4.String() != "10.9.0.1" {
		t.Errorf("node through the tool: %v %v", n.IPv4, err)
	}
	tool.Close()
	s.Close()
	open(t, path, p).Close()
	// No pools recorded yet: refused, not guessed.
	if _, err := Open(filepath.Join(t.TempDir(), "fresh.db"), Pools{}); err == nil || !strings.Contains(err.Error(), "no address pools recorded") {
		t.Errorf("fresh database with zero pools: %v", err)
	}
}

func TestAddIndex(t *testing.T) {
	tests := []struct {
		base string
		i    int64
		want string
	}{
		{"100.64.0.0", 1, "100.64.0.1"},
		{"10.0.0.255", 1, "10.0.1.0"},
		{"100.64.0.0", 1<<22 - 2, "100.127.255.254"},
		{"fd7a:7761:7272::", 1, "fd7a:7761:7272::1"},
		{"fd00::ffff", 1, "fd00::1:0"},
		{"fd00::ffff:ffff:ffff:ffff", 1, "fd00:0:0:1::"},
		{"fd7a:7761:7272::", 1<<22 - 2, "fd7a:7761:7272::3f:fffe"},
	}
	for _, tt := range tests {
		if got := addIndex(netip.MustParseAddr(tt.base), tt.i); got.String() != tt.want {
			t.Errorf("addIndex(%s, %d) = %v, want %s", tt.base, tt.i, got, tt.want)
		}
	}
}
