package node

import (
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/node/localapi"
)

// joinRequests keeps the join requests awaiting this node's approval in the networks it owns, as
// the coord last sent them (PeerDelta.Joins), for `warren status`, and logs each new one once: the
// owner learns of a request as it arrives. A peer map (every login) forgets the list; the coord
// sends it again if there is one. Safe for concurrent use.
type joinRequests struct {
	mu   sync.Mutex
	list []control.JoinRequest
	more int
	seen map[joinID]bool // the requests of the last list, logged already
}

type joinID struct{ network, key string }

// handle applies a control message: a delta's list replaces the one kept, a peer map clears it.
func (j *joinRequests) handle(m *control.Msg, log hclog.Logger) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case m.Type == control.TypePeerMap:
		j.list, j.more = nil, 0
		return
	case m.Type != control.TypePeerDelta || m.PeerDelta.Joins == nil:
		return
	}
	js := m.PeerDelta.Joins
	seen := make(map[joinID]bool, len(js.Requests))
	for _, r := range js.Requests {
		id := joinID{r.Network, r.Key}
		seen[id] = true
		if !j.seen[id] {
			log.Info("join request: a node asks to join your network ('warren network approve|deny NETWORK NODE')",
				"network", r.Network, "node", r.Name, "key", r.Key, "requested", r.At)
		}
	}
	if js.More > 0 && js.More != j.more {
		log.Info("more join requests wait than listed ('warren network pending NETWORK')", "more", js.More)
	}
	j.list, j.more, j.seen = js.Requests, js.More, seen
}

// status returns the requests for localapi.Status.
func (j *joinRequests) status() ([]localapi.JoinRequest, int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]localapi.JoinRequest, 0, len(j.list))
	for _, r := range j.list {
		out = append(out, localapi.JoinRequest{Network: r.Network, Name: r.Name, Key: r.Key, RequestedAt: r.At})
	}
	return out, j.more
}
