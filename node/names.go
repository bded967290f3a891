package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// Names are identities: NAME.warren reaches a peer and access rules grant to it. The coord keeps
// names unique among the nodes that share a network, but this node does not take that on trust: a
// name that two peers (or a peer and this node) claim belongs to nobody here. It resolves to
// neither peer, matches no name in a rule, and is logged, whatever order the peers came in.

// nameIndex maps each peer name (lower case) that exactly one peer has, and that is not self, to
// that peer's IPv4 (its first address). ambiguous lists, sorted, the names it left out because
// several claim them.
func nameIndex(peers map[peer.Key]control.Peer, self string) (byName map[string]netip.Addr, ambiguous []string) {
	self = strings.ToLower(self)
	byName = make(map[string]netip.Addr, len(peers))
	claims := make(map[string]int, len(peers))
	for _, p := range peers {
		if len(p.IPs) == 0 {
			continue
		}
		name := strings.ToLower(p.Name)
		claims[name]++
		byName[name] = p.IPs[0]
	}
	for name, n := range claims {
		if n > 1 || name == self {
			delete(byName, name)
			ambiguous = append(ambiguous, name)
		}
	}
	slices.Sort(ambiguous)
	return byName, ambiguous
}

// logAmbiguousNames warns about names several peers claim, when the set changes.
func (s *peerState) logAmbiguousNames(before, now []string) {
	if slices.Equal(before, now) {
		return
	}
	for _, name := range now {
		if !slices.Contains(before, name) {
			s.log.Warn("several peers claim one name: it resolves to none of them and access rules do not match it by name; the coordination server should not allow this",
				"name", name)
		}
	}
}

// Rename asks the coord to give this node another name; peers see it at once, and access rules
// keep applying (they are bound to the node's key). It returns the name now in force.
func (n *Node) Rename(ctx context.Context, name string) (string, error) {
	if err := control.ValidNodeName(name); err != nil {
		return "", err
	}
	if n.coord == nil {
		return "", errCoordOffline
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rep, err := n.coord.request(ctx, control.Request{Op: control.OpRename, Name: name})
	if err != nil {
		return "", err
	}
	if rep.Name == "" {
		return "", fmt.Errorf("rename: the coordination server did not confirm the new name")
	}
	old := n.peers.rename(rep.Name)
	n.log.Info("renamed", "from", old, "to", rep.Name)
	return rep.Name, nil
}

// handleRenameAPI serves POST /v1/rename for `warren rename`.
func (n *Node) handleRenameAPI(w http.ResponseWriter, r *http.Request) {
	var req localapi.RenameRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "bad request: " + err.Error()})
		return
	}
	name, err := n.Rename(r.Context(), req.Name)
	if err != nil {
		rep := localapi.ErrorReply{Error: err.Error()}
		var cerr *control.Error
		if errors.As(err, &cerr) {
			rep.Code = string(cerr.Code)
		}
		writeJSON(w, http.StatusConflict, rep)
		return
	}
	writeJSON(w, http.StatusOK, localapi.Rename{Name: name})
}

// who names a peer in logs: "name(KEYPREFIX)" (peer.Endpoint.Who).
func (n *Node) who(k peer.Key) string {
	if n.ep == nil {
		return k.String()
	}
	return n.ep.Who(k)
}
