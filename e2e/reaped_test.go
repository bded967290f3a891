package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node"
)

// TestReapedNodeStops: an ephemeral node that was away longer than the coord's timeout has been
// removed; when it reconnects, its single-use key is used up, and instead of retrying forever the
// node reports the refusal through Stopped and Err (warren up then exits with it).
func TestReapedNodeStops(t *testing.T) {
	dir := t.TempDir()
	c := startCoordWith(t, dir, func(cfg *coord.Config) { cfg.EphemeralTimeout = 200 * time.Millisecond })
	owner := startNode(t, c, "owner")
	owner.network(t, "create", "ci", "")
	// A second handle on the coord's database, as 'warren-coord authkey create' would open it.
	st, err := store.Open(filepath.Join(dir, "warren.db"), store.Pools{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, key, err := st.CreateAuthKey(context.Background(), store.AuthKeyOptions{Network: "ci", Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	job := startNodeWith(t, c, "job", func(cfg *node.Config) { cfg.AuthKey = key })
	if !job.Ephemeral() {
		t.Fatal("a node with an ephemeral key is not ephemeral")
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return owner.peerState("job").Online }, "owner never saw job online")

	// The reaper removes job once it has been offline 200 ms; job reconnects after about a second,
	// which a loaded machine may not keep apart: a job back before the reaper ran is online again and
	// stays. So it is disconnected again until the reaper has removed it from the store.
	testkit.Eventually(t, 60*time.Second, func() bool {
		c.srv.Disconnect(job.key(t))
		_, err := st.Node(context.Background(), job.key(t))
		return errors.Is(err, store.ErrNotFound)
	}, "the coord never removed the disconnected ephemeral node")
	select {
	case <-job.Stopped():
	case <-time.After(60 * time.Second): // its retries back off up to 30 s
		t.Fatal("the reaped node kept retrying")
	}
	if err := job.Err(); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("Err() = %v, want the refused key", err)
	}
	if p := owner.peerState("job"); p.Name != "" {
		t.Errorf("owner still lists the reaped node: %+v", p)
	}
}
