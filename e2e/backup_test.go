package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warren-net/warren/coord/operatorapi"
)

// TestCoordBackup backs up a running coord's database with 'warren-coord backup' while nodes are
// logged in, restores it into a new data directory (with the coord's key), and starts a coord there:
// it knows the nodes and the network, and a node logs in to it with the addresses it had. A write
// after the backup is not in it, and a second backup to the same file is refused.
func TestCoordBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	alice := startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0", "--socks", "")
	startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateB, "--name", "bob", "--listen", "127.0.0.1:0", "--socks", "")
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "backed", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "backed", "--state", stateB, "--password", "pw")
	ipsA := statusOf(t, stateA).Self.IPs

	backup := filepath.Join(tmp, "backups", "coord.db")
	os.MkdirAll(filepath.Dir(backup), 0o700)
	out := coordCmd(t, true, "backup", backup, "--data", data)
	if !strings.Contains(out, "backed up") {
		t.Errorf("backup said: %s", out)
	}
	warren(t, true, "network", "create", "after", "--state", stateA, "--password", "pw")
	if out := coordCmd(t, false, "backup", backup, "--data", data); !strings.Contains(out, "exists") {
		t.Errorf("backup over an existing file said: %s", out)
	}

	// Restore as the README says, into a new data directory: the key and the backup.
	restored := filepath.Join(tmp, "restored")
	os.MkdirAll(restored, 0o700)
	copyFile(t, filepath.Join(data, "key.pem"), filepath.Join(restored, "key.pem"))
	copyFile(t, backup, filepath.Join(restored, "warren.db"))
	coord2 := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", restored)
	addr2 := coord2.line(t, "warren-coord listening on")
	if fp2 := coord2.line(t, "key"); fp2 != fp {
		t.Fatalf("restored coord's key %s, want %s", fp2, fp)
	}
	var nodes []operatorapi.Node
	coordJSON(t, &nodes, "nodes", "--data", restored)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"alice", "bob"}) {
		t.Errorf("restored coord knows nodes %v, want alice and bob", names)
	}
	var nets []operatorapi.Network
	coordJSON(t, &nets, "networks", "--data", restored)
	if len(nets) != 1 || nets[0].Name != "backed" || nets[0].Members != 2 {
		t.Errorf("restored coord knows networks %+v, want backed with 2 members (not the later one)", nets)
	}

	// alice moves to the restored coord: same pinned key, same addresses, still in the network.
	alice.stop()
	startProc(t, "warren", "up", "--coord", addr2, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0", "--socks", "")
	waitLoggedIn(t, stateA)
	if got := statusOf(t, stateA).Self.IPs; !slices.Equal(got, ipsA) {
		t.Errorf("alice's addresses on the restored coord: %v, want %v", got, ipsA)
	}
	if !strings.Contains(warren(t, true, "network", "list", "--state", stateA), "backed") {
		t.Error("alice is not in network backed on the restored coord")
	}
}

// TestCoordCorruptDatabase damages a stopped coord's database: the next start fails with a message
// that names the file and says how to restore, and following it with a backup brings the coord back.
func TestCoordCorruptDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	state := filepath.Join(tmp, "a")
	startProc(t, "warren", "up", "--coord", addr, "--state", state, "--name", "alice", "--listen", "127.0.0.1:0", "--socks", "")
	waitLoggedIn(t, state)
	backup := filepath.Join(tmp, "coord.db")
	coordCmd(t, true, "backup", backup, "--data", data)
	coord.stop()

	db := filepath.Join(data, "warren.db")
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	f.ReadAt(buf, 4096) // page 2: a b-tree page
	for i := range buf {
		buf[i] = ^buf[i]
	}
	f.WriteAt(buf, 4096)
	f.Close()

	out := coordCmd(t, false, "--listen", "127.0.0.1:0", "--data", data)
	for _, want := range []string{"the database " + db + " is damaged", "warren-coord backup FILE", "cp FILE " + db, "stop the server"} {
		if !strings.Contains(out, want) {
			t.Errorf("start on a damaged database: no %q in:\n%s", want, out)
		}
	}

	// The recipe: move the damaged file away, copy the backup in, start.
	if err := os.Rename(db, db+".damaged"); err != nil {
		t.Fatal(err)
	}
	os.Remove(db + "-wal")
	os.Remove(db + "-shm")
	copyFile(t, backup, db)
	coord = startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	coord.line(t, "warren-coord listening on")
	if out := coordCmd(t, true, "nodes", "--data", data); !strings.Contains(out, "alice") {
		t.Errorf("restored coord's nodes:\n%s", out)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
