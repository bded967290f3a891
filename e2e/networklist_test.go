package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestNetworkList: warren network list shows each node its networks with its role and the member
// count, as a table and as JSON.
func TestNetworkList(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	alice := adminNode{name: "alice", state: filepath.Join(tmp, "alice")}
	bob := adminNode{name: "bob", state: filepath.Join(tmp, "bob")}
	for _, n := range []adminNode{alice, bob} {
		startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", n.state, "--name", n.name, "--listen", "127.0.0.1:0", "--socks", "")
	}
	waitLoggedIn(t, alice.state)
	waitLoggedIn(t, bob.state)
	alice.net(t, 0, "no network", "list")
	alice.net(t, 0, "created", "create", "club", "--open")
	bob.net(t, 0, "joined", "join", "club")

	type entry struct {
		Name    string `json:"name"`
		Role    string `json:"role"`
		Members int    `json:"members"`
	}
	for _, tc := range []struct {
		n    adminNode
		role string
	}{{alice, "owner"}, {bob, "member"}} {
		var got []entry
		if err := json.Unmarshal([]byte(tc.n.net(t, 0, "", "list", "--json")), &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != (entry{"club", tc.role, 2}) {
			t.Errorf("%s: network list --json = %+v, want club as %s with 2 members", tc.n.name, got, tc.role)
		}
		table := tc.n.net(t, 0, "NETWORK", "list")
		if !strings.Contains(table, "club") || !strings.Contains(table, tc.role) {
			t.Errorf("%s: network list:\n%s", tc.n.name, table)
		}
	}
}
