package node

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/peer"
)

// peerState is the node's view of its peers as the coord sent it: the peer map, the access rules of
// its networks (by network, as sent and compiled) and this node's own tag. Every change publishes a
// new route table built from it (buildRoutes) while the lock is held, so tables are published in the
// order of the changes. Safe for concurrent use.
type peerState struct {
	configured string                      // the name this node was started with (Config.Name)
	log        hclog.Logger                // for rules this node cannot read
	routes     *atomic.Pointer[routeTable] // where apply publishes (Node.routes)

	// mu guards the following.
	mu       sync.Mutex
	peers    map[peer.Key]control.Peer
	self     string                       // this node's name: the coord's once told (Welcome.Name, a rename), else configured
	selfKey  string                       // this node's key fingerprint, which rules may name
	selfTag  string                       // this node's tag, from the last welcome
	aclRules map[string][]control.ACLRule // access rules by network, as the coord sent them
	policies map[string]*acl.Policy       // the same, compiled
}

func newPeerState(self string, log hclog.Logger, routes *atomic.Pointer[routeTable]) *peerState {
	routes.Store(&routeTable{})
	return &peerState{configured: self, self: self, log: log, routes: routes, peers: make(map[peer.Key]control.Peer),
		aclRules: make(map[string][]control.ACLRule), policies: make(map[string]*acl.Policy)}
}

// apply records a welcome (this node's tag), a peer map (replaces peers and rules) or a delta
// (upserts and removes peers, replaces the rules of the networks it names), publishes the new route
// table and returns it, with the peer links to have.
func (s *peerState) apply(m *control.Msg) (*routeTable, []peer.Info) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.Type {
	case control.TypeWelcome:
		s.selfTag = m.Welcome.Tag
		if w := m.Welcome.Name; w != "" && w != s.self {
			if w != s.configured {
				s.log.Warn("the coordination server knows this node by another name: names stay with the node's key, so it goes by that name (use `warren rename` to change it)",
					"name", w, "configured", s.configured)
			}
			s.self = w
		}
	case control.TypePeerMap:
		clear(s.peers)
		for _, p := range m.PeerMap.Peers {
			if k, ok := peer.KeyOf(p.Key); ok {
				s.peers[k] = p
			}
		}
		clear(s.aclRules)
		clear(s.policies)
		s.applyACLsLocked(m.PeerMap.ACLs)
	case control.TypePeerDelta:
		for _, p := range m.PeerDelta.Upsert {
			if k, ok := peer.KeyOf(p.Key); ok {
				s.peers[k] = p
			}
		}
		for _, kb := range m.PeerDelta.Remove {
			if k, ok := peer.KeyOf(kb); ok {
				delete(s.peers, k)
			}
		}
		s.applyACLsLocked(m.PeerDelta.ACLs)
	}
	rt, infos := buildRoutes(s.peers, s.policies, acl.Member{Name: s.self, Tag: s.selfTag, Key: s.selfKey})
	before := s.routes.Swap(rt)
	s.logAmbiguousNames(before.ambiguous, rt.ambiguous)
	return rt, infos
}

// setKey records this node's key fingerprint, which access rules may name.
func (s *peerState) setKey(fingerprint string) {
	s.mu.Lock()
	s.selfKey = fingerprint
	s.mu.Unlock()
}

// selfName returns the name this node goes by.
func (s *peerState) selfName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.self
}

// rename records the name the coord confirmed, and returns the previous one.
func (s *peerState) rename(name string) (old string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, s.self = s.self, name
	return old
}

// applyACLsLocked records rule lists by network; an empty list clears its network's rules.
func (s *peerState) applyACLsLocked(lists []control.ACL) {
	for _, a := range lists {
		if len(a.Rules) == 0 {
			delete(s.aclRules, a.Network)
			delete(s.policies, a.Network)
			continue
		}
		p, err := acl.Compile(a.Rules)
		if err != nil {
			// Rules this node cannot read (a newer server's syntax?) allow nothing: fail closed.
			s.log.Error("cannot read the access rules of a network; refusing what they would allow", "network", a.Network, "error", err)
			p = &acl.Policy{}
		}
		s.aclRules[a.Network] = a.Rules
		s.policies[a.Network] = p
	}
}

// snapshot returns the peer map and the rules, for the cache.
func (s *peerState) snapshot() ([]control.Peer, []control.ACL) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var peers []control.Peer
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	var acls []control.ACL
	for network, rules := range s.aclRules {
		acls = append(acls, control.ACL{Network: network, Rules: rules})
	}
	return peers, acls
}

// sorted returns a copy of the peer map sorted by name.
func (s *peerState) sorted() []control.Peer {
	s.mu.Lock()
	out := make([]control.Peer, 0, len(s.peers))
	for _, p := range s.peers {
		out = append(out, p)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b control.Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// name returns peer k's name, "" for no peer.
func (s *peerState) name(k peer.Key) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[k].Name
}

// consent returns the keys of every peer in the peer map: the node's consent list for the relays.
func (s *peerState) consent() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([][]byte, 0, len(s.peers))
	for k := range s.peers {
		keys = append(keys, k[:])
		if len(keys) == control.MaxRelayConsent {
			break
		}
	}
	return keys
}
