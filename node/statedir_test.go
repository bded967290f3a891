package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-net/warren/internal/testkit"
)

// TestWorldWritableStateRefused (issue 13, item 8): a state directory other users may write to (and
// so replace the node's key, its coord pin or its API socket in) stops the node at start, before it
// creates a key there or contacts the coord.
func TestWorldWritableStateRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{StateDir: dir, Coord: "127.0.0.1:9", Name: "x", Logger: testkit.Logger(t, "x")})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("start in a world-writable state directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "key.pem")); !os.IsNotExist(err) {
		t.Errorf("a key was created there: %v", err)
	}
}
