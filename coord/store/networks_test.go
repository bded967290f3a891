package store

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
)

// newNetStore returns a store with nodes 1..6 named by nodeNames (deliberately not in key order).
func newNetStore(t *testing.T) *Store {
	t.Helper()
	s := open(t, tempDB(t), testPools)
	for i, name := range nodeNames {
		upsert(t, s, key(byte(i+1)), name)
	}
	return s
}

var nodeNames = []string{"delta", "alpha", "echo", "bravo", "charlie", "foxtrot"}

func nameOf(k []byte) string { return nodeNames[k[0]-1] }

func TestNetworkOps(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	steps := []struct {
		desc    string
		do      func() error
		wantErr error // nil = success; errAny = any error
	}{
		{"create lan", func() error { return s.CreateNetwork(ctx, "lan", "", key(1)) }, nil},
		{"create lan again", func() error { return s.CreateNetwork(ctx, "lan", "", key(2)) }, ErrExists},
		{"create by unknown node", func() error { return s.CreateNetwork(ctx, "ghost", "", key(99)) }, ErrNotFound},
		{"bad name", func() error { return s.CreateNetwork(ctx, "Bad Name", "", key(1)) }, errAny},
		{"empty name", func() error { return s.CreateNetwork(ctx, "", "", key(1)) }, errAny},
		{"join lan", func() error { return s.AddMember(ctx, "lan", key(2)) }, nil},
		{"join lan again", func() error { return s.AddMember(ctx, "lan", key(2)) }, nil},
		{"join missing", func() error { return s.AddMember(ctx, "nope", key(2)) }, ErrNotFound},
		{"unknown node joins", func() error { return s.AddMember(ctx, "lan", key(99)) }, ErrNotFound},
		{"leave lan", func() error { return s.RemoveMember(ctx, "lan", key(2)) }, nil},
		{"leave lan again", func() error { return s.RemoveMember(ctx, "lan", key(2)) }, ErrNotMember},
		{"leave missing", func() error { return s.RemoveMember(ctx, "nope", key(2)) }, ErrNotMember},
		{"owner leaves", func() error { return s.RemoveMember(ctx, "lan", key(1)) }, nil},
		{"rejoin emptied", func() error { return s.AddMember(ctx, "lan", key(2)) }, nil},
	}
	for _, st := range steps {
		err := st.do()
		switch {
		case st.wantErr == nil && err != nil:
			t.Errorf("%s: %v", st.desc, err)
		case st.wantErr == errAny && err == nil:
			t.Errorf("%s: succeeded, want an error", st.desc)
		case st.wantErr != nil && st.wantErr != errAny && !errors.Is(err, st.wantErr):
			t.Errorf("%s: %v, want %v", st.desc, err, st.wantErr)
		}
	}
	if _, err := s.Network(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("network of a failed create exists: %v", err)
	}
	if n, _ := s.NetworksOf(ctx, key(99)); len(n) != 0 {
		t.Errorf("unknown node in %v", n)
	}
}

var errAny = errors.New("any error")

func TestNetworkRecord(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	if err := s.CreateNetwork(ctx, "secret.net_1", "$argon2id$stored-as-is", key(3)); err != nil {
		t.Fatal(err)
	}
	n, err := s.Network(ctx, "secret.net_1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "secret.net_1" || n.PasswordHash != "$argon2id$stored-as-is" || !bytes.Equal(n.Owner, key(3)) || n.CreatedAt.IsZero() {
		t.Errorf("Network = %+v", n)
	}
	if _, err := s.Network(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing network: %v", err)
	}
	mem, err := s.Members(ctx, "secret.net_1")
	if err != nil || len(mem) != 1 || !bytes.Equal(mem[0].Key, key(3)) {
		t.Errorf("owner is not the only member: %+v %v", mem, err)
	}
}

func TestMembershipQueries(t *testing.T) {
	s := newNetStore(t)
	ctx := context.Background()
	// Networks and their members (by key byte); the first is the owner.
	nets := []struct {
		name    string
		members []byte
	}{
		{"lan", []byte{1, 2, 3}},
		{"games", []byte{2, 1, 4}},
		{"work", []byte{3, 1}},
		{"solo", []byte{5}},
		{"pair", []byte{6, 4}},
	}
	for _, n := range nets {
		if err := s.CreateNetwork(ctx, n.name, "", key(n.members[0])); err != nil {
			t.Fatal(err)
		}
		for _, m := range n.members[1:] {
			if err := s.AddMember(ctx, n.name, key(m)); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("NetworksOf", func(t *testing.T) {
		for k, want := range map[byte][]string{
			1: {"games", "lan", "work"}, 2: {"games", "lan"}, 4: {"games", "pair"}, 5: {"solo"}, 99: nil,
		} {
			got, err := s.NetworksOf(ctx, key(k))
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("NetworksOf(%d) = %v, %v; want %v", k, got, err, want)
			}
		}
	})

	t.Run("Members", func(t *testing.T) {
		for net, want := range map[string][]string{
			"lan": {"alpha", "delta", "echo"}, "games": {"alpha", "bravo", "delta"}, "solo": {"charlie"}, "nope": nil,
		} {
			got, err := s.Members(ctx, net)
			var names []string
			for _, n := range got {
				names = append(names, n.Name)
				if !n.IPv4.IsValid() || !n.IPv6.IsValid() {
					t.Errorf("member %s without addresses", n.Name)
				}
			}
			if err != nil || !reflect.DeepEqual(names, want) {
				t.Errorf("Members(%s) = %v, %v; want %v", net, names, err, want)
			}
		}
	})

	t.Run("Peers", func(t *testing.T) {
		type peer struct {
			name string
			nets []string
		}
		tests := []struct {
			key  byte
			want []peer // sorted by name
		}{
			{1, []peer{{"alpha", []string{"games", "lan"}}, {"bravo", []string{"games"}}, {"echo", []string{"lan", "work"}}}},
			{2, []peer{{"bravo", []string{"games"}}, {"delta", []string{"games", "lan"}}, {"echo", []string{"lan"}}}},
			{4, []peer{{"alpha", []string{"games"}}, {"delta", []string{"games"}}, {"foxtrot", []string{"pair"}}}},
			{5, nil}, // alone in its network
			{99, nil},
		}
		for _, tt := range tests {
			rows, err := s.Peers(ctx, key(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			var got []peer
			for _, r := range rows {
				if bytes.Equal(r.Key, key(tt.key)) {
					t.Errorf("Peers(%d) includes itself", tt.key)
				}
				if nameOf(r.Key) != r.Name || !r.IPv4.IsValid() {
					t.Errorf("Peers(%d): bad row %+v", tt.key, r)
				}
				got = append(got, peer{r.Name, r.Networks})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Peers(%d) = %v, want %v", tt.key, got, tt.want)
			}
		}
	})

	t.Run("after leave", func(t *testing.T) {
		if err := s.RemoveMember(ctx, "lan", key(3)); err != nil {
			t.Fatal(err)
		}
		rows, _ := s.Peers(ctx, key(3))
		if len(rows) != 1 || rows[0].Name != "delta" || !reflect.DeepEqual(rows[0].Networks, []string{"work"}) {
			t.Errorf("Peers of echo after leaving lan: %+v", rows)
		}
	})
}
