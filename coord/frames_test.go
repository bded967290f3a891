package coord

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/warren-net/warren/control"
)

// TestLargePeerMapInFrames: a peer map or delta beyond the frame budget comes in several frames,
// each within the budget; the map's frames say More until the last, and together hold every peer.
func TestLargePeerMapInFrames(t *testing.T) {
	const budget, members = 4 << 10, 40
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) { c.frameBudget = budget })
	owner := dial(t, srv)
	owner.login(t, "owner")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "big", Open: true})
	owner.do(t, "", control.Request{Op: control.OpACLSet, Network: "big",
		Rules: []control.ACLRule{{From: []string{"*"}, To: []string{"*"}, Ports: []string{"*"}}}})
	first := mustKey(t)
	for i := range members {
		key := mustKey(t)
		if i == 0 {
			key = first
		}
		c := dialKey(t, srv, key)
		c.login(t, fmt.Sprintf("m%02d", i))
		c.do(t, "", control.Request{Op: control.OpJoin, Network: "big"})
		if i == 0 {
			c.conn.CloseWithError(0, "") // logs in again below
		}
	}

	// A new member's login: the peer map in frames.
	c := dial(t, srv)
	c.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "late"}})
	c.recv(t, control.TypeWelcome)
	seen := map[string]bool{}
	var frames int
	for more := true; more; frames++ {
		m := c.recv(t, control.TypePeerMap)
		b, _ := control.Encode(m)
		if frames > 0 && len(b) > budget+256 {
			t.Fatalf("frame %d is %d bytes, budget %d", frames, len(b), budget)
		}
		for _, p := range m.PeerMap.Peers {
			seen[p.Name] = true
		}
		more = m.PeerMap.More
	}
	// Not a member of big yet: it sees no one. Join: the delta about 41 peers comes in frames too.
	if len(seen) != 0 || frames != 1 {
		t.Fatalf("before joining: %d peers in %d frames", len(seen), frames)
	}
	c.send(t, &control.Msg{Type: control.TypeRequest, Request: &control.Request{ID: 99, Op: control.OpJoin, Network: "big"}})
	deltas, acl := 0, false
	for len(seen) < members+1 {
		m, err := control.ReadMsg(c.stream)
		if err != nil {
			t.Fatalf("after %d peers: %v", len(seen), err)
		}
		if m.Type != control.TypePeerDelta {
			continue
		}
		if b, _ := control.Encode(m); len(b) > budget+256 {
			t.Fatalf("delta of %d bytes, budget %d", len(b), budget)
		}
		deltas++
		acl = acl || len(m.PeerDelta.ACLs) > 0
		for _, p := range m.PeerDelta.Upsert {
			seen[p.Name] = true
		}
	}
	if deltas < 3 || !acl {
		t.Fatalf("%d peers in %d deltas (rules sent: %v); want several frames", len(seen), deltas, acl)
	}

	// Logging in again as a member: the whole map, in frames, all but the last with More.
	again := dialKey(t, srv, first)
	again.send(t, &control.Msg{Type: control.TypeLogin, Login: &control.Login{Version: control.Version, Name: "m00"}})
	again.recv(t, control.TypeWelcome)
	var peers, rules int
	frames = 0
	for more := true; more; frames++ {
		pm := again.recv(t, control.TypePeerMap).PeerMap
		peers += len(pm.Peers)
		rules += len(pm.ACLs)
		more = pm.More
	}
	if peers != members+1 || rules != 1 || frames < 3 {
		t.Fatalf("map of %d peers, %d rule lists in %d frames; want %d peers, 1 list, several frames", peers, rules, frames, members+1)
	}
	t.Logf("a %d-peer map in %d frames of at most %d bytes", peers, frames, budget)
}
