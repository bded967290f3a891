package control

import (
	"strings"
	"testing"
	"time"
)

// TestJoinRequestsBounded: a delta's list of join requests is bounded, and the largest fits in the
// room a frame leaves beside a full budget of peers.
func TestJoinRequestsBounded(t *testing.T) {
	long := strings.Repeat("\u0001", MaxNameLen)
	reqs := make([]JoinRequest, MaxJoinRequests)
	for i := range reqs {
		reqs[i] = JoinRequest{Network: long, Name: long, Key: strings.Repeat("\u0001", MaxTarget), At: time.Now()}
	}
	m := &Msg{Type: TypePeerDelta, PeerDelta: &PeerDelta{Joins: &JoinRequests{Requests: reqs, More: 1000}}}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxFrameSize-FrameBudget {
		t.Errorf("the largest list of join requests takes %d bytes", len(b))
	}
	m.PeerDelta.Joins.Requests = append(reqs, reqs[0])
	if _, err := Encode(m); err == nil {
		t.Error("more than MaxJoinRequests requests passed")
	}
	m.PeerDelta.Joins = &JoinRequests{Requests: []JoinRequest{{Network: "", Name: "x"}}}
	if _, err := Encode(m); err == nil {
		t.Error("a request without a network passed")
	}
	for _, r := range []Request{{Op: OpDeny, Network: "n", All: true, Target: "x"}, {Op: OpKick, Network: "n", All: true},
		{Op: OpKick, Network: "n", Target: "x", Open: true}} {
		if _, err := Encode(&Msg{Type: TypeRequest, Request: &r}); err == nil {
			t.Errorf("request %+v passed", r)
		}
	}
	for _, r := range []Request{{Op: OpDeny, Network: "n", All: true}, {Op: OpCreate, Network: "n", Open: true},
		{Op: OpPassword, Network: "n", Open: true}, {Op: OpApproval, Network: "n", Open: true}} {
		if _, err := Encode(&Msg{Type: TypeRequest, Request: &r}); err != nil {
			t.Errorf("request %+v: %v", r, err)
		}
	}
}
