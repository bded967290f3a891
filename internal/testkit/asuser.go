package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Nobody is the uid and gid tests run clients as when they need another local user.
const Nobody = 65534

// SelfAsNobody returns a command that runs this test binary again as uid and gid Nobody, with env
// added to the environment (the test's TestMain reads it and acts as the client). The binary is
// copied where that user can read it. The test is skipped, saying why, unless it runs as root with
// setpriv (util-linux) installed.
func SelfAsNobody(t testing.TB, env ...string) *exec.Cmd {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another local user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to run a client as another local user")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "warren-test-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}
