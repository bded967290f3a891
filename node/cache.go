package node

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// The node caches what it learned from the coordination server — its addresses, its peers and the UDP
// port it used — so that a node restarted while the coord is down comes back with its tunnels.

const cacheFile = "peers.json"

// maxCacheSize bounds what is read back from the state directory: a peer map of tens of thousands
// of peers (control.MaxMapPeers) fits.
const maxCacheSize = 64 << 20

// cachedState is the on-disk cache, written atomically (temp file, fsync, rename) with mode 0600.
type cachedState struct {
	Welcome *control.Welcome `json:"welcome"`
	Peers   []control.Peer   `json:"peers"`
	ACLs    []control.ACL    `json:"acls,omitempty"` // access rules of the node's networks
	Port    uint16           `json:"port"`           // the node's UDP port, reused so cached endpoints stay valid
	SavedAt time.Time        `json:"saved_at"`
}

func (n *Node) cachePath() string { return filepath.Join(n.cfg.StateDir, cacheFile) }

// saveCache writes the current welcome and peer map. Errors are logged: the cache is an optimisation.
func (n *Node) saveCache() {
	n.mu.Lock()
	st := cachedState{Welcome: n.welcome, Port: n.port, SavedAt: time.Now().UTC()}
	n.mu.Unlock()
	st.Peers, st.ACLs = n.peers.snapshot()
	if st.Welcome == nil {
		return
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = identity.WriteFileAtomic(n.cachePath(), b, 0o600)
	}
	if err != nil {
		n.log.Warn("could not save the peer cache", "error", err)
	}
}

// loadCache reads the cache; a missing file is (nil, nil).
func loadCache(path string) (*cachedState, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st cachedState
	dec := json.NewDecoder(io.LimitReader(f, maxCacheSize))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	// Validate with the control protocol's own rules: the cache is input like any other.
	if st.Welcome == nil {
		return nil, fmt.Errorf("read %s: no addresses", path)
	}
	if err := (&control.Msg{Type: control.TypeWelcome, Welcome: st.Welcome}).Validate(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := control.ValidPeerMap(&control.PeerMap{Peers: st.Peers, ACLs: st.ACLs}); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &st, nil
}
