package node

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
)

// TestJoinRequestsNoted (issue 13, item 2): the owner's node logs each join request once, as it
// arrives, and keeps the coord's latest list for `warren status`; a peer map (a new login) forgets
// the list but does not log the same requests again when it comes back.
func TestJoinRequestsNoted(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf})
	var j joinRequests
	at := time.Unix(1_700_000_000, 0).UTC()
	delta := func(more int, reqs ...control.JoinRequest) *control.Msg {
		return &control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{Joins: &control.JoinRequests{Requests: reqs, More: more}}}
	}
	bob := control.JoinRequest{Network: "club", Name: "bob", Key: "SHA256:bob", At: at}
	eve := control.JoinRequest{Network: "club", Name: "eve", Key: "SHA256:eve", At: at}

	j.handle(delta(0, bob), log)
	j.handle(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{}}, log) // no news
	j.handle(delta(2, bob, eve), log)
	if got := strings.Count(buf.String(), "join request: a node asks to join your network"); got != 2 {
		t.Errorf("%d request lines, want 2 (bob, eve):\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "node=eve") || !strings.Contains(buf.String(), "more=2") {
		t.Errorf("log:\n%s", buf.String())
	}
	list, more := j.status()
	if len(list) != 2 || list[1].Name != "eve" || list[1].Network != "club" || !list[1].RequestedAt.Equal(at) || more != 2 {
		t.Errorf("status %+v, %d more", list, more)
	}

	buf.Reset()
	j.handle(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{}}, log)
	if list, more := j.status(); len(list) != 0 || more != 0 {
		t.Errorf("after a peer map: %+v, %d", list, more)
	}
	j.handle(delta(0, eve), log)
	j.handle(delta(0), log)
	if buf.Len() != 0 {
		t.Errorf("logged again:\n%s", buf.String())
	}
	if list, _ := j.status(); len(list) != 0 {
		t.Errorf("after an empty list: %+v", list)
	}
}
