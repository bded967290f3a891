package acl

import (
	"strings"
	"testing"

	"github.com/warren-net/warren/control"
)

// TestKeyEntries: a rule the coord bound to a key matches that key only, whatever the peer calls
// itself; a peer whose name is unknown or ambiguous (Name "") matches no name.
func TestKeyEntries(t *testing.T) {
	alice := "SHA256:" + strings.Repeat("a", 43)
	mallory := "SHA256:" + strings.Repeat("m", 43)
	p, err := Compile([]control.ACLRule{{From: []string{KeyEntry(alice)}, To: []string{"bob"}, Ports: []string{"48082/tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	bob := Member{Name: "bob", Key: "SHA256:" + strings.Repeat("b", 43)}
	for _, c := range []struct {
		from Member
		want bool
	}{
		{Member{Name: "alice", Key: alice}, true},
		{Member{Name: "alice2", Key: alice}, true},   // renamed: the grant follows the key
		{Member{Name: "alice", Key: mallory}, false}, // took the name: no grant
		{Member{Name: "alice"}, false},
	} {
		if got := p.Grant(c.from, bob).Allows(TCP, 48082); got != c.want {
			t.Errorf("from %+v: allowed %v, want %v", c.from, got, c.want)
		}
	}
	byName, err := Compile([]control.ACLRule{{From: []string{"*"}, To: []string{"bob"}, Ports: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if byName.Grant(Member{Key: alice}, Member{Key: bob.Key}).Allows(TCP, 1) {
		t.Error("a member without a name matched the name bob")
	}
	for _, bad := range []string{"key:", "key:SHA256:short", "key:" + strings.Repeat("a", 50), "key:SHA256:" + strings.Repeat("!", 43)} {
		if _, err := Compile([]control.ACLRule{{From: []string{bad}, To: []string{"*"}, Ports: []string{"*"}}}); err == nil {
			t.Errorf("Compile accepted %q", bad)
		}
	}
	for entry, want := range map[string]string{"bob": "bob", "*": "", "tag:ci": "", KeyEntry(alice): ""} {
		if got, _ := EntryName(entry); got != want {
			t.Errorf("EntryName(%q) = %q, want %q", entry, got, want)
		}
	}
	if fp, ok := EntryKey(KeyEntry(alice)); !ok || fp != alice {
		t.Errorf("EntryKey(KeyEntry) = %q, %v", fp, ok)
	}
}
