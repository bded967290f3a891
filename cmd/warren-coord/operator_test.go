package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operator"
	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
)

// TestAdminCommandsOffline: without a server the commands work on the database, say that the
// online state is unknown, edit the default block list, and audit what they change.
func TestAdminCommandsOffline(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "warren.db"), store.Pools{V4: netip.MustParsePrefix("10.7.0.0/16"), V6: netip.MustParsePrefix("fd00:7::/64")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	st.UpsertNode(ctx, bytes.Repeat([]byte{1}, 32), "laptop")
	st.CreateNetwork(ctx, "home", "", bytes.Repeat([]byte{1}, 32))

	run := func(f func([]string, io.Writer) error, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := f(args, &out); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	nodes, networks, block, blocks, node, audit := cmdNodes, cmdNetworks, cmdBlock, cmdBlocks, cmdNode, cmdAudit

	out := run(nodes, "--data", dir)
	if !strings.Contains(out, "online state unknown") || !strings.Contains(out, "laptop") || !strings.Contains(out, "10.7.0.1") {
		t.Errorf("nodes:\n%s", out)
	}
	var list []operatorapi.Node
	if err := json.Unmarshal([]byte(run(nodes, "--json", "--data", dir)), &list); err != nil || len(list) != 1 || list[0].Online != nil {
		t.Errorf("nodes --json: %v %+v", err, list)
	}
	if out := run(networks, "--data", dir); !strings.Contains(out, "home") || !strings.Contains(out, "laptop (") {
		t.Errorf("networks:\n%s", out)
	}
	// No server has recorded a block list: the default file in the data directory.
	if out := run(block, "add", "198.51.100.0/24", "--comment", "scanner", "--data", dir); !strings.Contains(out, "no server is running") {
		t.Errorf("block add:\n%s", out)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, defaultBlockFile)); string(data) != "198.51.100.0/24 # scanner\n" {
		t.Errorf("default block list: %q", data)
	}
	// The file the server recorded wins over the default; --blocklist over both.
	recorded := filepath.Join(t.TempDir(), "recorded")
	st.SetSetting(ctx, operator.SettingBlockFile, recorded)
	run(block, "add", "192.0.2.1", "--data", dir)
	explicit := filepath.Join(t.TempDir(), "explicit")
	run(block, "add", "192.0.2.2", "--data", dir, "--blocklist", explicit)
	for file, want := range map[string]string{recorded: "192.0.2.1\n", explicit: "192.0.2.2\n"} {
		if data, _ := os.ReadFile(file); string(data) != want {
			t.Errorf("%s: %q, want %q", file, data, want)
		}
	}
	if out := run(blocks, "--data", dir); !strings.Contains(out, "192.0.2.1/32") || !strings.Contains(out, recorded) {
		t.Errorf("blocks:\n%s", out)
	}
	if out := run(node, "remove", "laptop", "--data", dir); !strings.Contains(out, "removed node laptop") || !strings.Contains(out, "no server is running") {
		t.Errorf("node remove:\n%s", out)
	}
	var entries []operatorapi.AuditEntry
	if err := json.Unmarshal([]byte(run(audit, "--json", "--data", dir, "--since", "1h")), &entries); err != nil || len(entries) != 4 ||
		entries[3].Action != "node.remove" || time.Since(entries[0].Time) > time.Minute {
		t.Errorf("audit: %v %+v", err, entries)
	}
	for _, bad := range [][]string{{"remove", "--data", dir}, {"add", "not-a-cidr", "--data", dir}, {"remove", "203.0.113.1", "--data", dir}, {"drop", "x"}} {
		if err := cmdBlock(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("block %v succeeded", bad)
		}
	}
	if err := cmdNode([]string{"remove", "laptop", "--data", dir}, &bytes.Buffer{}); err == nil {
		t.Error("removed laptop twice")
	}
	if err := cmdAudit([]string{"--data", dir, "--since", "soon"}, &bytes.Buffer{}); err == nil {
		t.Error("audit --since soon accepted")
	}
}
