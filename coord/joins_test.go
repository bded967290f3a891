package coord

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// spamPending records n join requests to network from source through the store, each from a new
// node whose key starts with tag.
func spamPending(t *testing.T, srv *Server, network, source string, tag uint16, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		k := make([]byte, 32)
		binary.BigEndian.PutUint16(k, tag)
		binary.BigEndian.PutUint32(k[2:], uint32(i+1))
		if _, err := srv.cfg.Store.UpsertNode(ctx, k, fmt.Sprintf("spam%d-%d", tag, i)); err != nil {
			t.Fatal(err)
		}
		if err := srv.cfg.Store.AddJoinRequest(ctx, network, k, source, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestJoinRequestsBoundedPerSource (issue 13, item 2): one source address cannot fill a network's
// approval queue, nor everyone's: beyond a few requests per network and a few more in all, its
// joins are refused (code too_many_requests), while other sources still get in line.
func TestJoinRequestsBoundedPerSource(t *testing.T) {
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) { c.limitLoopback = true })
	owner, asker := dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	asker.login(t, "asker")
	const here = "127.0.0.1/32" // where the test's nodes come from
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "club", Approval: true})
	spamPending(t, srv, "club", "192.0.2.1/32", 1, maxPendingPerSourceInNetwork) // another source's
	spamPending(t, srv, "club", here, 2, maxPendingPerSourceInNetwork-1)
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"}) // the last one from here
	late := dial(t, srv)
	late.login(t, "late")
	rep := late.do(t, control.CodeTooManyRequests, control.Request{Op: control.OpJoin, Network: "club"})
	if rep.Error == "" {
		t.Error("the refusal says nothing")
	}

	// In all networks: the same source fills its quota across networks.
	for i := 0; i < (maxPendingPerSource-maxPendingPerSourceInNetwork)/maxPendingPerSourceInNetwork; i++ {
		name := fmt.Sprintf("club%d", i)
		owner.do(t, "", control.Request{Op: control.OpCreate, Network: name, Approval: true})
		spamPending(t, srv, name, here, uint16(10+i), maxPendingPerSourceInNetwork)
	}
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "fresh", Approval: true})
	late.do(t, control.CodeTooManyRequests, control.Request{Op: control.OpJoin, Network: "fresh"})
}

// TestJoinRequestsExpire (issue 13, item 2): a request the owner leaves alone is dropped after the
// expiry (default 7 days): the owner no longer sees or approves it, and the node may ask again.
func TestJoinRequestsExpire(t *testing.T) {
	var offset atomic.Int64 // how far the test's clock is ahead of the real one
	srv := startServerWith(t, t.TempDir()+"/w.db", func(c *Config) {
		c.clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	if srv.cfg.JoinRequestExpiry != 7*24*time.Hour {
		t.Errorf("default expiry %v", srv.cfg.JoinRequestExpiry)
	}
	owner, asker := dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	asker.login(t, "asker")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "club", Approval: true})
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"})
	offset.Store(int64(6 * 24 * time.Hour))
	if rep := owner.do(t, "", control.Request{Op: control.OpPending, Network: "club"}); len(rep.Members) != 1 {
		t.Fatalf("after 6 days: %+v", rep.Members)
	}
	offset.Store(int64(7*24*time.Hour + 2*time.Second))
	if rep := owner.do(t, "", control.Request{Op: control.OpPending, Network: "club"}); len(rep.Members) != 0 {
		t.Fatalf("after 7 days: %+v", rep.Members)
	}
	owner.do(t, control.CodeNotFound, control.Request{Op: control.OpApprove, Network: "club", Target: "asker"})
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"})
	owner.do(t, "", control.Request{Op: control.OpApprove, Network: "club", Target: "asker"})
}

// TestDenyAll (issue 13, item 2): the owner drops a network's whole approval queue at once.
func TestDenyAll(t *testing.T) {
	srv := startServer(t)
	owner, asker, other := dial(t, srv), dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	asker.login(t, "asker")
	other.login(t, "other")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "club", Approval: true})
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "lab", Approval: true})
	spamPending(t, srv, "club", "", 1, 5)
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"})
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "lab"})
	asker.do(t, control.CodeNotOwner, control.Request{Op: control.OpDeny, Network: "club", All: true})
	rep := owner.do(t, "", control.Request{Op: control.OpDeny, Network: "club", All: true})
	if len(rep.Members) != 6 {
		t.Errorf("deny all answered %d requests, want 6", len(rep.Members))
	}
	if rep := owner.do(t, "", control.Request{Op: control.OpPending, Network: "club"}); len(rep.Members) != 0 {
		t.Errorf("left after deny all: %+v", rep.Members)
	}
	if rep := owner.do(t, "", control.Request{Op: control.OpPending, Network: "lab"}); len(rep.Members) != 1 {
		t.Errorf("another network's queue: %+v", rep.Members)
	}
	_, err := srv.Owner(context.Background(), OwnerRequest{By: Actor{Operator: true}, Op: control.OpDeny, Network: "lab", Target: "asker", All: true})
	if cerr, ok := err.(*control.Error); !ok || cerr.Code != control.CodeInvalid {
		t.Errorf("deny all with a target: %v", err)
	}
}

// joinsAre matches a delta whose list of join requests names exactly these nodes.
func joinsAre(names ...string) func(*control.PeerDelta) bool {
	return func(d *control.PeerDelta) bool {
		if d.Joins == nil || len(d.Joins.Requests) != len(names) {
			return false
		}
		for i, r := range d.Joins.Requests {
			if r.Name != names[i] {
				return false
			}
		}
		return true
	}
}

// TestOwnerToldOfJoinRequests (issue 13, item 2): the owner's node hears of each join request as it
// arrives (and of the list after it logs in), so it can log it and show it in `warren status`.
func TestOwnerToldOfJoinRequests(t *testing.T) {
	srv := startServer(t)
	ownerKey, askerKey := mustKey(t), mustKey(t)
	owner, asker := dialKey(t, srv, ownerKey), dialKey(t, srv, askerKey)
	owner.login(t, "owner")
	asker.login(t, "asker")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "club", Approval: true})
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"})
	var got *control.JoinRequests
	owner.waitDelta(t, "owner told of asker's request", func(d *control.PeerDelta) bool {
		got = d.Joins
		return joinsAre("asker")(d)
	})
	if r := got.Requests[0]; r.Network != "club" || r.Key != identity.Fingerprint(askerKey.Public()) || time.Since(r.At) > time.Minute {
		t.Errorf("request %+v", r)
	}

	// After a login the list comes again.
	owner.conn.CloseWithError(0, "")
	owner = dialKey(t, srv, ownerKey)
	owner.login(t, "owner")
	owner.waitDelta(t, "the list after login", joinsAre("asker"))

	// Dealt with: the list empties.
	owner.do(t, "", control.Request{Op: control.OpDeny, Network: "club", Target: "asker"})
	owner.waitDelta(t, "the list after deny", joinsAre())
}

// TestPendingNodeListsNothing: a node whose join waits for approval is not a member yet: it may not
// list the network's members, its pending joins or its rules (as the README says).
func TestPendingNodeListsNothing(t *testing.T) {
	srv := startServer(t)
	owner, asker := dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	asker.login(t, "asker")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "club", Approval: true})
	asker.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "club"})
	asker.do(t, control.CodeNotOwner, control.Request{Op: control.OpMembers, Network: "club"})
	asker.do(t, control.CodeNotOwner, control.Request{Op: control.OpPending, Network: "club"})
	asker.do(t, control.CodeNotMember, control.Request{Op: control.OpACLShow, Network: "club"})
}
