package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestCoordStorageFull: a coord whose disk is full (its data dir on a 600 KiB tmpfs, filled up)
// says "storage full" in its log and refuses a new node's login with the transient code
// storage_full instead of an internal error; the new node shows the reason (log and `warren
// status`) and keeps retrying; a known node still logs in (its login needs no write); once space is
// freed the new node comes up without a restart.
func TestCoordStorageFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a small tmpfs for the coord's data dir (CI runs as root)")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", data, "tmpfs", 0, "size=600k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(data, syscall.MNT_DETACH) }) // runs after the processes stop

	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", data)
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	up := func(name string) (*proc, string) {
		state := filepath.Join(tmp, name)
		return startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", ""), state
	}
	old, stateOld := up("old")
	waitLoggedIn(t, stateOld)
	old.stop()

	// Fill the file system.
	filler := filepath.Join(data, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()

	// A new node is refused for now, says why, and keeps trying.
	fresh, stateFresh := up("fresh")
	testkit.Eventually(t, 60*time.Second, func() bool { return strings.Count(coord.stderr.String(), "storage full: ") >= 2 },
		"the coord did not say 'storage full' twice (first try and a retry):\n%v", later(func() any { return coord.stderr.String() }))
	if !strings.Contains(fresh.stderr.String(), "storage is full") || !strings.Contains(fresh.stderr.String(), "storage_full") {
		t.Errorf("the new node's log does not show the reason:\n%s", fresh.stderr.String())
	}
	if strings.Contains(coord.stderr.String(), "internal error") {
		t.Errorf("the coord answered 'internal error':\n%s", coord.stderr.String())
	}
	select {
	case <-fresh.done:
		t.Fatalf("the new node gave up:\n%s", fresh.stderr.String())
	default:
	}
	waitAPI(t, stateFresh)
	st := statusOf(t, stateFresh)
	if st.Coord.Connected || !strings.Contains(st.Coord.Trouble, "storage_full") {
		t.Errorf("status of the waiting node: coord %+v, want not connected with the storage_full reason", st.Coord)
	}
	if table := warren(t, true, "status", "--state", stateFresh); !strings.Contains(table, "retrying") || !strings.Contains(table, "storage is full") {
		t.Errorf("status table of the waiting node:\n%s", table)
	}

	// A known node logs in all the same: reading its row is all its login needs.
	up("old")
	waitLoggedIn(t, stateOld)

	// Space again: the new node comes up by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitLoggedIn(t, stateFresh)
	t.Logf("the new node logged in %v after space was freed", time.Since(freed).Round(time.Millisecond))
	if st := statusOf(t, stateFresh); st.Coord.Trouble != "" {
		t.Errorf("trouble after logging in: %q", st.Coord.Trouble)
	}
}
