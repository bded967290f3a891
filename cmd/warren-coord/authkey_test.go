package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

func TestAuthKeyCommands(t *testing.T) {
	dir := t.TempDir()
	// A server's database with non-default pools and a network; it stays open, as a running
	// server's would.
	pools := store.Pools{V4: netip.MustParsePrefix("10.7.0.0/16"), V6: netip.MustParsePrefix("fd00:7::/64")}
	st, err := store.Open(filepath.Join(dir, "warren.db"), pools)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	owner := bytes.Repeat([]byte{1}, 32)
	st.UpsertNode(ctx, owner, "owner")
	if err := st.CreateNetwork(ctx, "ci", "", owner); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := cmdAuthKey(args, &out)
		return out.String(), err
	}
	out, err := run("create", "--data", dir, "--network", "ci", "--ephemeral", "--expiry", "2d", "--tag", "ci")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	secret := lines[len(lines)-1]
	if !strings.HasPrefix(secret, "warren-auth-") || strings.Contains(secret, " ") {
		t.Fatalf("last line is not the key alone:\n%s", out)
	}
	if !strings.Contains(out, "single-use, ephemeral, tag ci, expires") {
		t.Errorf("create output:\n%s", out)
	}
	// The key works against the server's store, which kept its pools.
	node := bytes.Repeat([]byte{2}, 32)
	n, _ := st.UpsertNode(ctx, node, "job")
	if _, _, err := st.RedeemAuthKey(ctx, node, secret, time.Now(), store.Limits{}); err != nil {
		t.Fatalf("redeem the printed key: %v", err)
	}
	if n.IPv4.String() != "10.7.0.2" {
		t.Errorf("the tool changed the pools: new node at %v", n.IPv4)
	}

	out, err = run("list", "--json", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	var list []operatorapi.AuthKey
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	k := list[0]
	if k.State != "used" || k.Uses != 1 || !k.Ephemeral || k.Reusable || k.Tag != "ci" || k.ExpiresAt == nil || k.RevokedAt != nil ||
		k.ExpiresAt.Sub(k.CreatedAt) < 47*time.Hour {
		t.Errorf("listed key: %+v", k)
	}
	if strings.Contains(out, secret[len(secret)-64:]) {
		t.Error("list shows the secret")
	}

	if _, err := run("revoke", k.ID, "--data", dir); err != nil {
		t.Fatal(err)
	}
	out, _ = run("list", "--data", dir)
	if !strings.Contains(out, k.ID) || !strings.Contains(out, "revoked") {
		t.Errorf("list after revoke:\n%s", out)
	}

	for _, bad := range [][]string{
		{"create", "--data", dir},
		{"create", "--data", dir, "--network", "nope"},
		{"create", "--data", dir, "--network", "ci", "--expiry", "-1h"},
		{"create", "--data", dir, "--network", "ci", "--tag", "Not A Tag"},
		{"revoke", "--data", dir, "000000000000"},
		{"revoke", "--data", dir},
		{"list", "--data", filepath.Join(dir, "missing")},
		{"list"},
		{"explode"},
	} {
		if _, err := run(bad...); err == nil {
			t.Errorf("authkey %s succeeded", strings.Join(bad, " "))
		}
	}

	// With the server's key in the data directory, the join line carries it with the address.
	key, _, err := identity.LoadOrCreate(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	out, err = run("create", "--data", dir, "--network", "ci", "--coord", "coord.example:7400")
	if err != nil {
		t.Fatal(err)
	}
	if want := "join with: warren up --coord coord.example:7400#" + key.Fingerprint() + " --authkey"; !strings.Contains(out, want) {
		t.Errorf("create output lacks %q:\n%s", want, out)
	}
}

func TestParseExpiry(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "90s": 90 * time.Second, "1h": time.Hour, "7d": 7 * 24 * time.Hour} {
		if got, err := parseExpiry(in); err != nil || got != want {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "-1h", "d", "1.5d", "soon"} {
		if _, err := parseExpiry(bad); err == nil {
			t.Errorf("parseExpiry(%q) succeeded", bad)
		}
	}
}
