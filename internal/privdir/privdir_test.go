package privdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Check(dir, "state directory"); err != nil {
		t.Errorf("a private directory: %v", err)
	}
	for _, mode := range []os.FileMode{0o777, 0o1777, 0o770, 0o702} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := Check(dir, "state directory"); err == nil || !strings.Contains(err.Error(), "state directory "+dir+" is writable by other users") {
			t.Errorf("mode %v: %v", mode, err)
		}
	}
	if err := Check(filepath.Join(dir, "missing"), "state directory"); err == nil {
		t.Error("a missing directory passed")
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	if err := Check(file, "state directory"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file: %v", err)
	}
}
