package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnits checks the units in deploy/systemd with systemd's own tools: `systemd-analyze
// verify` (system and user manager) must accept them without a word, `systemd-analyze security
// --offline` must rate the coord's sandbox OK or better, and systemd-sysusers must accept the user
// the coord's unit runs as; the backup unit's command must make a backup. The units name
// /usr/local/bin/X, where the binaries are not installed here: the copies checked name the binaries
// built for the test instead. What this cannot show is the services running under systemd (no
// systemd runs as PID 1 here).
func TestSystemdUnits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	needTool(t, "systemd-analyze", "systemd-sysusers")
	tmp := t.TempDir()
	// systemd-analyze --user wants a runtime directory, as a user manager has.
	analyze := func(args ...string) (string, error) {
		cmd := exec.Command("systemd-analyze", args...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+tmp, "SYSTEMD_LOG_COLOR=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Can systemd-analyze work in this environment at all? A unit that is surely fine tells.
	probe := filepath.Join(tmp, "probe.service")
	os.WriteFile(probe, []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	if out, err := analyze("verify", probe); err != nil || strings.TrimSpace(out) != "" {
		t.Skipf("systemd-analyze cannot verify units in this environment (a trivial unit fails: %v): %s", err, out)
	}

	binDir := filepath.Dir(bin(t, "warren"))
	bin(t, "warren-coord")
	units := map[string]string{}
	for _, u := range []string{"warren-coord.service", "warren.service", "warren-coord-backup.service", "warren-coord-backup.timer"} {
		b, err := os.ReadFile(repoFile("deploy/systemd/" + u))
		if err != nil {
			t.Fatal(err)
		}
		units[u] = string(b)
		local := strings.ReplaceAll(string(b), "/usr/local/bin/", binDir+"/")
		if err := os.WriteFile(filepath.Join(tmp, u), []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ unit, mode string }{{"warren-coord.service", "--system"}, {"warren.service", "--user"},
		{"warren-coord-backup.service", "--system"}, {"warren-coord-backup.timer", "--system"}} {
		out, err := analyze(c.mode, "verify", filepath.Join(tmp, c.unit))
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze %s verify %s: %v\n%s", c.mode, c.unit, err, out)
		}
	}

	// The coord's sandbox, as systemd rates it (0 = fully locked down, 10 = none; "OK" is below 2).
	out, err := analyze("security", "--offline=yes", filepath.Join(tmp, "warren-coord.service"))
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for warren-coord\.service: ([0-9.]+) (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security said:\n%s", out)
	}
	t.Logf("warren-coord.service exposure: %s %s", m[1], m[2])
	if level, _ := strconv.ParseFloat(m[1], 64); level > 2.0 {
		t.Errorf("warren-coord.service exposure %s %s, want at most 2.0:\n%s", m[1], m[2], out)
	}
	// What each unit must say, beyond what systemd rates: no capabilities and the state directory for
	// the coord, no privileges for the user's node.
	for unit, want := range map[string][]string{
		"warren-coord.service": {"User=warren-coord", "StateDirectory=warren-coord", "StateDirectoryMode=0700", "CapabilityBoundingSet=\n",
			"ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
			"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n", "SystemCallFilter=@system-service", "--data /var/lib/warren-coord"},
		"warren.service": {"NoNewPrivileges=yes", "SystemCallFilter=@system-service", "WantedBy=default.target", "ExecStart=/usr/local/bin/warren up "},
	} {
		for _, w := range want {
			if !strings.Contains(units[unit], w) {
				t.Errorf("%s does not say %q", unit, strings.TrimSpace(w))
			}
		}
	}
	if strings.Contains(units["warren.service"], "User=") {
		t.Error("warren.service is a user unit: it runs as the user and must not set User=")
	}

	// The backup unit's command, as systemd would run it (specifiers unescaped), on the database of a
	// running coord: a checked copy appears in the backup directory.
	m = regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(units["warren-coord-backup.service"])
	if m == nil {
		t.Fatal("warren-coord-backup.service has no ExecStart")
	}
	data, backups := filepath.Join(tmp, "data"), filepath.Join(tmp, "backups")
	os.Mkdir(data, 0o700)
	os.Mkdir(backups, 0o700)
	startCoord(t, data)
	line := strings.NewReplacer("%%", "%", "/var/lib/warren-coord-backups", backups, "/var/lib/warren-coord", data,
		"/usr/local/bin/", binDir+"/").Replace(m[1])
	if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil || !strings.Contains(string(out), "backed up") {
		t.Errorf("the backup unit's command %s: %v\n%s", line, err, out)
	}
	if copies, _ := filepath.Glob(filepath.Join(backups, "warren-*.db")); len(copies) != 1 {
		t.Errorf("backups after the backup unit's command: %v, want one warren-DATE-TIME.db", copies)
	}

	// The coord's user, created by systemd-sysusers in an empty root (dry run).
	root := filepath.Join(tmp, "root")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	conf, _ := filepath.Abs(repoFile("deploy/systemd/warren-coord.conf"))
	sysusers, err := exec.Command("systemd-sysusers", "--dry-run", "--root="+root, conf).CombinedOutput()
	if err != nil || !strings.Contains(string(sysusers), "Creating user 'warren-coord'") {
		t.Errorf("systemd-sysusers %s: %v\n%s", conf, err, sysusers)
	}
}
