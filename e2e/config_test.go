package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigFiles: warren-coord and `warren up` take their flags from --config files too; the
// command line wins, and a bad line stops the start with its number.
func TestConfigFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := filepath.Join(tmp, "coord data")
	coordConf := write("coord.conf", "# the server\nlisten = 127.0.0.1:0\ndata = \""+data+"\"\nlog-level = debug\n")
	coord := startProc(t, "warren-coord", "--config", coordConf)
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	if _, err := os.Stat(filepath.Join(data, "admin.sock")); err != nil {
		t.Errorf("the coord does not use the data dir from its config: %v", err)
	}

	state := filepath.Join(tmp, "node")
	nodeConf := write("node.conf", "coord = "+addr+"\ncoord-key = "+fp+"\nname = from-file\nlisten = 127.0.0.1:0\nsocks = 127.0.0.1:0\nstate = "+state+"\n")
	startProc(t, "warren", "up", "--config", nodeConf, "--name", "from-cli")
	waitLoggedIn(t, state)
	if name := statusOf(t, state).Self.Name; name != "from-cli" {
		t.Errorf("node name %q, want the command line's", name)
	}

	bad := write("bad.conf", "coord = "+addr+"\nsocks 127.0.0.1:0\n")
	if out, code := warrenRun(t, "up", "--config", bad, "--state", filepath.Join(tmp, "bad")); code == 0 || !strings.Contains(out, "line 2") {
		t.Errorf("a bad config: status %d:\n%s", code, out)
	}
}
