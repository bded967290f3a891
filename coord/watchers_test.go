package coord

import (
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// watchedBy returns the keys of the sessions Server.watchers lists for k.
func watchedBy(srv *Server, k nodeKey) map[nodeKey]bool {
	out := map[nodeKey]bool{}
	for _, sess := range srv.watching(k) {
		out[sess.key] = true
	}
	return out
}

// TestWatchersFollowPeers: the reverse index of session.peers lists, for each node, the sessions
// told of it: filled at login and by a join, emptied of a session when its node leaves the network
// or logs out, so that resync looks at the right sessions and nothing of a gone session stays.
func TestWatchersFollowPeers(t *testing.T) {
	srv := startServer(t)
	keys := make([]*identity.Key, 3)
	for i := range keys {
		var err error
		if keys[i], err = identity.Generate(); err != nil {
			t.Fatal(err)
		}
	}
	ka, kb, kc := keyOf(keys[0].Public()), keyOf(keys[1].Public()), keyOf(keys[2].Public())
	a := dialKey(t, srv, keys[0])
	a.login(t, "a")
	a.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Open: true})
	b := dialKey(t, srv, keys[1])
	b.login(t, "b")
	b.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	a.waitDelta(t, "b joined", upserts("b", true))
	testkit.Eventually(t, 10*time.Second, func() bool {
		return watchedBy(srv, ka)[kb] && watchedBy(srv, kb)[ka]
	}, "a and b do not watch each other after the join")

	// c logs in already a member: its login's peer map makes it a watcher of both.
	c := dialKey(t, srv, keys[2])
	c.login(t, "c")
	c.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	c.conn.CloseWithError(0, "bye")
	a.waitDelta(t, "c offline", upserts("c", false))
	c2 := dialKey(t, srv, keys[2])
	c2.login(t, "c")
	testkit.Eventually(t, 10*time.Second, func() bool {
		w := watchedBy(srv, ka)
		return w[kc] && watchedBy(srv, kb)[kc]
	}, "c's new session does not watch a and b after its login")

	b.do(t, "", control.Request{Op: control.OpLeave, Network: "lan"})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return !watchedBy(srv, ka)[kb] && !watchedBy(srv, kb)[ka] && !watchedBy(srv, kb)[kc]
	}, "b still watched or watching after it left")

	c2.conn.CloseWithError(0, "bye")
	testkit.Eventually(t, 10*time.Second, func() bool {
		return !watchedBy(srv, ka)[kc] && len(watchedBy(srv, kc)) == 1 // a watches c (offline)
	}, "c's closed session still in the index")
	srv.watchMu.Lock()
	defer srv.watchMu.Unlock()
	for k, w := range srv.watchers {
		for sess := range w {
			if sess.gone {
				t.Errorf("dropped session of %v listed as watching %v", sess.key, k)
			}
		}
	}
}
