package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersion builds both binaries the way `make build` does, with VERSION set, and checks that
// `version` and `--version` print it: the Makefile's -X main.version reaches a variable that exists.
func TestVersion(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make:", err)
	}
	const want = "v9.8.7-test-gabcdef"
	dir := t.TempDir()
	build := exec.Command("make", "-C", "..", "build", "BIN="+dir, "VERSION="+want)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	for _, name := range []string{"warren", "warren-coord"} {
		for _, arg := range []string{"version", "--version"} {
			out, err := exec.Command(filepath.Join(dir, name), arg).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", name, arg, err, out)
			}
			if got := strings.TrimSpace(string(out)); got != name+" "+want {
				t.Errorf("%s %s printed %q, want %q", name, arg, got, name+" "+want)
			}
		}
	}
}
