package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAuthKeyLifecycle(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	if err := s.CreateNetwork(ctx, "ci", "", key(1)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	single, secret1, err := s.CreateAuthKey(ctx, AuthKeyOptions{Network: "ci", Tag: "ci", Ephemeral: true, Expiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := parseAuthKey(secret1); !ok || id != single.ID {
		t.Fatalf("key %q does not parse to its ID %s", secret1, single.ID)
	}
	if single.ExpiresAt.Before(now.Add(time.Hour)) || single.ExpiresAt.After(now.Add(time.Hour+time.Second)) {
		t.Errorf("expires %v, want an hour from %v (rounded up)", single.ExpiresAt, now)
	}

	// Only the hash is stored; the key itself appears nowhere in the database.
	var stored []byte
	if err := s.db.QueryRow(`SELECT hash FROM authkeys WHERE id = ?`, single.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(secret1)); string(stored) != string(sum[:]) {
		t.Error("stored hash is not SHA-256 of the key")
	}

	// Node 2 redeems it: member of ci, tagged, ephemeral.
	k, redeemed, err := s.RedeemAuthKey(ctx, key(2), secret1, now, Limits{})
	if err != nil || !redeemed || k.Uses != 1 {
		t.Fatalf("redeem: %+v %v %v", k, redeemed, err)
	}
	n, _ := s.Node(ctx, key(2))
	if !n.Ephemeral || n.Tag != "ci" || n.AuthKeyID != single.ID {
		t.Errorf("node after redeeming: %+v", n)
	}
	if nets, _ := s.NetworksOf(ctx, key(2)); len(nets) != 1 || nets[0] != "ci" {
		t.Errorf("networks after redeeming: %v", nets)
	}
	// The same node may present it again (a reconnect or restart), even after it expired: no change.
	if _, redeemed, err := s.RedeemAuthKey(ctx, key(2), secret1, now.Add(2*time.Hour), Limits{}); err != nil || redeemed {
		t.Errorf("second login of the same node: %v %v", redeemed, err)
	}
	// Another node may not: single-use.
	if _, _, err := s.RedeemAuthKey(ctx, key(3), secret1, now, Limits{}); !errors.Is(err, ErrAuthKeyUsed) {
		t.Errorf("second node with a single-use key: %v", err)
	}
	if nets, _ := s.NetworksOf(ctx, key(3)); len(nets) != 0 {
		t.Errorf("refused node joined %v", nets)
	}

	reusable, secret2, err := s.CreateAuthKey(ctx, AuthKeyOptions{Network: "ci", Reusable: true, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []byte{3, 4} {
		if _, _, err := s.RedeemAuthKey(ctx, key(k), secret2, now, Limits{}); err != nil {
			t.Errorf("reusable key, node %d: %v", k, err)
		}
	}
	if n, _ := s.Node(ctx, key(3)); n.Ephemeral || n.Tag != "" {
		t.Errorf("plain key made node %+v", n)
	}
	if _, _, err := s.RedeemAuthKey(ctx, key(5), secret2, now.Add(2*time.Minute), Limits{}); !errors.Is(err, ErrAuthKeyExpired) {
		t.Errorf("expired key: %v", err)
	}
	if err := s.RevokeAuthKey(ctx, reusable.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RedeemAuthKey(ctx, key(5), secret2, now, Limits{}); !errors.Is(err, ErrAuthKeyRevoked) {
		t.Errorf("revoked key: %v", err)
	}
	if err := s.RevokeAuthKey(ctx, "000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}

	// Malformed keys, a wrong secret for a real ID, unknown IDs: all just invalid.
	wrong := secret2[:len(secret2)-1] + "0"
	if wrong == secret2 {
		wrong = secret2[:len(secret2)-1] + "1"
	}
	for _, bad := range []string{"", "warren-auth-", secret2 + "0", strings.ToUpper(secret2), wrong,
		"warren-auth-000000000000-" + strings.Repeat("0", 64)} {
		if _, _, err := s.RedeemAuthKey(ctx, key(6), bad, now, Limits{}); !errors.Is(err, ErrAuthKeyInvalid) {
			t.Errorf("RedeemAuthKey(%q) = %v, want invalid", bad, err)
		}
	}
	if _, _, err := s.RedeemAuthKey(ctx, key(99), secret2, now, Limits{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unregistered node: %v", err)
	}

	keys, err := s.AuthKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].ID != single.ID && keys[1].ID != single.ID {
		t.Fatalf("list: %+v %v", keys, err)
	}
	states := map[string]string{}
	for _, k := range keys {
		states[k.ID] = k.State(now)
	}
	if states[single.ID] != "used" || states[reusable.ID] != "revoked" {
		t.Errorf("states %v", states)
	}
}

func TestCreateAuthKeyRejects(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	if _, _, err := s.CreateAuthKey(ctx, AuthKeyOptions{Network: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown network: %v", err)
	}
	s.CreateNetwork(ctx, "ci", "", key(1))
	for _, o := range []AuthKeyOptions{{Network: "ci", Tag: "Bad Tag"}, {Network: "ci", Expiry: -time.Second}, {Network: ""}} {
		if _, _, err := s.CreateAuthKey(ctx, o); err == nil {
			t.Errorf("CreateAuthKey(%+v) succeeded", o)
		}
	}
}

// TestSingleUseRace: many nodes race for one single-use key, through two Stores on one file (as the
// server and a second process would): exactly one wins.
func TestSingleUseRace(t *testing.T) {
	path := tempDB(t)
	a, b := open(t, path, testPools), open(t, path, testPools)
	ctx := context.Background()
	for i := 1; i <= 20; i++ {
		upsert(t, a, key(byte(i)), fmt.Sprintf("n%d", i))
	}
	a.CreateNetwork(ctx, "ci", "", key(1))
	_, secret, err := b.CreateAuthKey(ctx, AuthKeyOptions{Network: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 2; i <= 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Store{a, b}[i%2]
			_, ok, err := s.RedeemAuthKey(ctx, key(byte(i)), secret, time.Now(), Limits{})
			if err != nil && !errors.Is(err, ErrAuthKeyUsed) {
				t.Errorf("node %d: %v", i, err)
			}
			mu.Lock()
			if ok {
				wins++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d nodes redeemed a single-use key", wins)
	}
	if m, _ := a.Members(ctx, "ci"); len(m) != 2 {
		t.Errorf("%d members, want the owner and one winner", len(m))
	}
}

func TestEphemeralNodes(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	s.CreateNetwork(ctx, "lan", "", key(1))
	s.AddMember(ctx, "lan", key(2))
	gone := upsert(t, s, key(2), nodeNames[1])
	if err := s.SetEphemeral(ctx, key(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEphemeral(ctx, key(42)); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetEphemeral(unknown) = %v", err)
	}
	t0 := time.Now()
	if nodes, _ := s.ExpiredEphemeral(ctx, t0.Add(time.Hour), 10); len(nodes) != 0 {
		t.Errorf("online node listed as expired: %v", nodes)
	}
	s.MarkOffline(ctx, key(2), t0)
	s.MarkOffline(ctx, key(2), t0.Add(time.Minute)) // the first time stays
	s.MarkOffline(ctx, key(1), t0)                  // not ephemeral: never listed
	if nodes, _ := s.ExpiredEphemeral(ctx, t0, 10); len(nodes) != 0 {
		t.Errorf("listed before its time: %v", nodes)
	}
	nodes, err := s.ExpiredEphemeral(ctx, t0.Add(time.Second), 10)
	if err != nil || len(nodes) != 1 || nodes[0].Name != gone.Name {
		t.Fatalf("expired: %v %v", nodes, err)
	}
	if ok, err := s.DeleteEphemeral(ctx, key(1)); ok || err != nil {
		t.Errorf("deleted a permanent node: %v %v", ok, err)
	}
	if ok, err := s.DeleteEphemeral(ctx, key(2)); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if _, err := s.Node(ctx, key(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("node still there: %v", err)
	}
	if m, _ := s.Members(ctx, "lan"); len(m) != 1 {
		t.Errorf("membership survived: %v", m)
	}
	// Its address is free again.
	if n := upsert(t, s, key(50), "new"); n.IPv4 != gone.IPv4 {
		t.Errorf("new node got %v, want the freed %v", n.IPv4, gone.IPv4)
	}

	// A restart: nodes recorded online count from now, long-offline ones from the floor.
	upsert(t, s, key(3), nodeNames[2])
	s.SetEphemeral(ctx, key(3))
	s.SetEphemeral(ctx, key(4))
	s.MarkOffline(ctx, key(4), t0.Add(-time.Hour))
	now := t0.Add(time.Minute)
	if n, err := s.RestartOfflineClocks(ctx, now, now.Add(-10*time.Second)); err != nil || n != 2 {
		t.Fatalf("restart clocks: %d %v", n, err)
	}
	nodes, _ = s.ExpiredEphemeral(ctx, now.Add(-9*time.Second), 10)
	if len(nodes) != 1 || nodes[0].Name != nodeNames[3] {
		t.Errorf("after restart, expired at floor+1s: %v", nodes)
	}
	nodes, _ = s.ExpiredEphemeral(ctx, now.Add(time.Millisecond), 10)
	if len(nodes) != 2 {
		t.Errorf("after restart, expired at now: %v", nodes)
	}
}

// FuzzParseAuthKey: whatever a node sends as its key, parsing never panics, and only the exact
// format passes, with the ID it carries.
func FuzzParseAuthKey(f *testing.F) {
	f.Add("warren-auth-0123456789ab-" + strings.Repeat("0f", 32))
	f.Add("warren-auth-")
	f.Add("warren-auth-0123456789ab-")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		id, ok := parseAuthKey(key)
		if !ok {
			return
		}
		if len(key) != len(authKeyPrefix)+authKeyIDLen+1+2*authKeySecret || key != authKeyPrefix+id+key[len(authKeyPrefix)+authKeyIDLen:] ||
			!isLowerHex(id) || len(id) != authKeyIDLen {
			t.Fatalf("parseAuthKey(%q) accepted it with ID %q", key, id)
		}
	})
}
