package operator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// dataDir returns a data directory with a database holding three nodes (two named "twin") and a
// network.
func dataDir(t *testing.T) (string, *store.Store) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "coord")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "warren.db"), store.Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for i, name := range []string{"alpha", "twin", "twin"} {
		if _, err := st.UpsertNode(ctx, key(byte(i+1)), name); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateNetwork(ctx, "games", "", key(1)); err != nil {
		t.Fatal(err)
	}
	st.AddMember(ctx, "games", key(2))
	return dir, st
}

func TestSocket(t *testing.T) {
	dir, st := dataDir(t)
	a := New(Config{Store: st, DefaultBlockFile: filepath.Join(dir, "blocklist")})
	sock, err := Listen(dir, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	// A second server on the same directory is refused; the first keeps its socket.
	if _, err := Listen(dir, a, nil); err == nil || !strings.Contains(err.Error(), "another warren-coord") {
		t.Errorf("second Listen: %v", err)
	}
	c := operatorapi.NewClient(dir)
	ctx := context.Background()
	if ok, err := c.Running(ctx); !ok || err != nil {
		t.Fatalf("running: %v %v", ok, err)
	}
	var nodes []operatorapi.Node
	if err := c.Do(ctx, &operatorapi.Request{Op: operatorapi.OpNodes}, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 3 || nodes[0].Name != "alpha" || nodes[0].Online != nil || len(nodes[0].Networks) != 1 {
		t.Errorf("nodes: %+v", nodes)
	}
	// Refusals carry their code.
	var aerr *operatorapi.Error
	err = c.Do(ctx, &operatorapi.Request{Op: operatorapi.OpNodeRemove, Node: "twin"}, nil)
	if !errors.As(err, &aerr) || aerr.Code != operatorapi.CodeAmbiguous {
		t.Errorf("ambiguous name: %v", err)
	}
	if err := c.Do(ctx, &operatorapi.Request{Op: operatorapi.OpBlockAdd, Prefix: "nonsense"}, nil); !errors.As(err, &aerr) || aerr.Code != operatorapi.CodeInvalid {
		t.Errorf("bad prefix: %v", err)
	}
	// A change through the socket is audited with the caller's uid.
	var ch operatorapi.BlockChange
	if err := c.Do(ctx, &operatorapi.Request{Op: operatorapi.OpBlockAdd, Prefix: "192.0.2.0/24", Comment: "test"}, &ch); err != nil || !ch.Changed || ch.Applied {
		t.Fatalf("block add: %+v %v", ch, err)
	}
	log, _ := st.AuditLog(ctx, time.Time{}, 0)
	if len(log) != 1 || log[0].Actor != store.OperatorActor(os.Getuid()) || log[0].Action != "block.add" || log[0].Target != "192.0.2.0/24" {
		t.Errorf("audit: %+v", log)
	}

	// Raw requests: wrong host, oversized and malformed bodies are refused without effect.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock.Path())
	}}}
	for _, tc := range []struct {
		host, body string
		want       int
	}{
		{"evil.example", `{"op":"nodes"}`, http.StatusForbidden},
		{operatorapi.Host, `{"op":"nodes"` + strings.Repeat(" ", operatorapi.MaxRequest) + `}`, http.StatusBadRequest},
		{operatorapi.Host, `{"op":"node.remove","node":"alpha","force":true}`, http.StatusBadRequest},
		{operatorapi.Host, `{"op":"nodes"}`, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+tc.host+operatorapi.Path, strings.NewReader(tc.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("host %s body %.40q: %s, want %d", tc.host, tc.body, resp.Status, tc.want)
		}
	}
	if n, _ := st.AllNodes(ctx); len(n) != 3 {
		t.Errorf("a refused request removed a node")
	}

	if err := sock.Close(); err != nil {
		t.Fatal(err)
	}
	sock.Close()
	if _, err := os.Stat(sock.Path()); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
	if err := c.Do(ctx, &operatorapi.Request{Op: operatorapi.OpNodes}, nil); !errors.Is(err, operatorapi.ErrNotRunning) {
		t.Errorf("after Close: %v", err)
	}
}

func TestListenStaleSocketAndPermissions(t *testing.T) {
	dir, st := dataDir(t)
	a := New(Config{Store: st})
	// A socket left by a crashed server is replaced.
	ln, err := net.Listen("unix", filepath.Join(dir, operatorapi.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	sock, err := Listen(dir, a, nil)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	sock.Close()

	// A regular file in its place is not removed.
	os.WriteFile(filepath.Join(dir, operatorapi.SocketName), []byte("mine"), 0o600)
	if _, err := Listen(dir, a, nil); err == nil {
		t.Error("replaced a regular file")
	}
	os.Remove(filepath.Join(dir, operatorapi.SocketName))

	// A directory others may write to is refused.
	os.Chmod(dir, 0o777)
	if _, err := Listen(dir, a, nil); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Errorf("world-writable dir: %v", err)
	}
	os.Chmod(dir, 0o750)
	sock, err = Listen(dir, a, nil)
	if err != nil {
		t.Fatalf("0750 dir: %v", err)
	}
	sock.Close()
	if err := CheckDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing dir accepted")
	}
}

func TestOfflineOperations(t *testing.T) {
	dir, st := dataDir(t)
	ctx := context.Background()
	recorded := filepath.Join(t.TempDir(), "recorded-blocklist")
	st.SetSetting(ctx, SettingBlockFile, recorded)
	a := New(Config{Store: st, DefaultBlockFile: filepath.Join(dir, "blocklist")})
	do := func(r *operatorapi.Request) (any, error) { return a.Do(ctx, "tester", r) }

	// Without a server: online state unknown, changes made on the database, the file the server
	// recorded edited.
	res, err := do(&operatorapi.Request{Op: operatorapi.OpNetworks})
	if err != nil {
		t.Fatal(err)
	}
	nets := res.([]operatorapi.Network)
	if len(nets) != 1 || nets[0].Online != nil || nets[0].Members != 2 || nets[0].OwnerName != "alpha" {
		t.Errorf("networks: %+v", nets)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpRelays}); err == nil || !strings.Contains(err.Error(), "no server runs") {
		t.Errorf("relays without a server: %v", err)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpBlockAdd, Prefix: "203.0.113.9"}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(recorded); string(data) != "203.0.113.9\n" {
		t.Errorf("recorded block list: %q", data)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpBlockRemove, Prefix: "203.0.113.0/24"}); err == nil {
		t.Error("removed an entry that is not there")
	}
	// By short key, one of the twins.
	twin := store.NodeInfo{}
	all, _ := st.AllNodes(ctx)
	for _, n := range all {
		if n.Name == "twin" {
			twin = n
		}
	}
	res, err = do(&operatorapi.Request{Op: operatorapi.OpNodeRemove, Node: nodeView(twin.Node, nil).Key})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(operatorapi.RemovedNode); r.Live || r.Node.Name != "twin" {
		t.Errorf("removed: %+v", r)
	}
	// Now the name is unique; by fingerprint works too.
	all, _ = st.AllNodes(ctx)
	if len(all) != 2 {
		t.Fatalf("nodes left: %+v", all)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpNodeRemove, Node: nodeView(all[1].Node, nil).Fingerprint}); err != nil {
		t.Fatal(err)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpNodeRemove, Node: "nobody"}); err == nil {
		t.Error("removed nobody")
	}
	res, err = do(&operatorapi.Request{Op: operatorapi.OpAuthKeyCreate, Network: "games", Tag: "ci", ExpirySeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	k := res.(operatorapi.NewAuthKey)
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpAuthKeyRevoke, ID: k.AuthKey.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := do(&operatorapi.Request{Op: operatorapi.OpAuthKeyCreate, Network: "nope"}); err == nil {
		t.Error("key for a missing network")
	}

	res, err = do(&operatorapi.Request{Op: operatorapi.OpAudit})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.([]operatorapi.AuditEntry) {
		if e.Actor != "tester" {
			t.Errorf("actor %q", e.Actor)
		}
		if strings.Contains(e.Detail, k.Secret[len(k.Secret)-20:]) {
			t.Error("the audit log holds the secret")
		}
		got = append(got, e.Action+" "+e.Target)
	}
	// Two nodes named twin, told apart by their keys.
	want := []string{"block.add 203.0.113.9/32", "node.remove twin(AwMDAwMD)", "node.remove twin(AgICAgIC)", "authkey.create " + k.AuthKey.ID, "authkey.revoke " + k.AuthKey.ID}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("audit:\n%v\nwant\n%v", got, want)
	}
}

func TestPeerUID(t *testing.T) {
	dir, st := dataDir(t)
	sock, err := Listen(dir, New(Config{Store: st}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	c, err := net.Dial("unix", sock.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if uid := peerUID(c); runtime.GOOS == "linux" && uid != os.Getuid() {
		t.Errorf("peer uid %d, want %d", uid, os.Getuid())
	}
	// A caller with another uid is refused before its request is read.
	for _, tc := range []struct {
		uid  int
		want int
	}{{os.Getuid() + 1, http.StatusForbidden}, {os.Getuid(), http.StatusOK}, {-1, http.StatusOK}} {
		req := httptest.NewRequest(http.MethodPost, "http://"+operatorapi.Host+operatorapi.Path, strings.NewReader(`{"op":"nodes"}`))
		w := httptest.NewRecorder()
		sock.handle(w, req.WithContext(context.WithValue(req.Context(), uidKey{}, tc.uid)))
		if w.Code != tc.want {
			t.Errorf("uid %d: %d, want %d", tc.uid, w.Code, tc.want)
		}
	}
}
