package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestBackupWhileWriting copies a database while another goroutine keeps writing to it: the copy
// opens, passes quick_check and holds every node written before the backup began; a second backup to
// the same file is refused and leaves no temporary file behind.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	src := tempDB(t)
	s := open(t, src, testPools)
	for i := range 100 {
		upsert(t, s, key2(0, i), fmt.Sprintf("n%d", i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.UpsertNode(ctx, key2(1, i%200), fmt.Sprintf("w%d", i%200)); err != nil {
				t.Errorf("write during backup: %v", err)
				return
			}
		}
	}()
	dir := t.TempDir()
	dst := filepath.Join(dir, "backup.db")
	err := Backup(ctx, src, dst)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, dst, Pools{})
	nodes, err := b.AllNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	for _, n := range nodes {
		if strings.HasPrefix(n.Name, "n") {
			first++
		}
	}
	if first != 100 {
		t.Errorf("backup has %d of the 100 nodes written before it (%d in all)", first, len(nodes))
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	err = Backup(ctx, src, dst)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "backup.db" && !strings.HasPrefix(e.Name(), "backup.db-") { // -wal/-shm of the open copy
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func key2(a byte, i int) []byte {
	k := key(a)
	k[30], k[31] = byte(i>>8), byte(i)
	return k
}

// TestOpenCorrupt flips bytes inside a closed database: Open and Backup fail with ErrCorrupt.
func TestOpenCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int64 // where the damage goes
	}{
		{"header", 0},        // "SQLite format 3": file is not a database
		{"btree page", 4096}, // page 2's b-tree header: database disk image is malformed
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tempDB(t)
			s, err := Open(path, testPools)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 300 {
				upsert(t, s, key2(2, i), fmt.Sprintf("c%d", i))
			}
			s.Close() // checkpoints the WAL into the file
			corruptFile(t, path, tc.off)
			_, err = Open(path, Pools{})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of a damaged file: %v, want ErrCorrupt", err)
			}
			err = Backup(context.Background(), path, filepath.Join(t.TempDir(), "b.db"))
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Backup of a damaged file: %v, want ErrCorrupt", err)
			}
		})
	}
}

// corruptFile overwrites 64 bytes at off with their complement.
func corruptFile(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = ^buf[i]
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}
