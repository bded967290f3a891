package control

import (
	"errors"
	"fmt"
	"io"
)

// Large peer maps. A node that shares networks with thousands of peers has a peer map larger than
// one frame (MaxFrameSize, MaxPeers), so the coord sends it as several PeerMap frames, each but the
// last with More set, and the node applies them as one map once the last has arrived (ReadPeerMap):
// never a partial view, which would look like peers leaving. Deltas need no such care — each is
// complete in itself — but the coord cuts those to the same budget. The budget is counted with
// upper bounds (PeerSize, ACLSize), well under MaxFrameSize, so that a frame it allows always fits.

// FrameBudget is what a peer map or delta frame is filled to, by PeerSize and ACLSize.
const FrameBudget = 1 << 20

// Bounds on a whole peer map (all its frames together), as a node accepts it.
const (
	MaxMapPeers  = 1 << 17
	MaxMapFrames = 1024
)

// jsonChar bounds the JSON encoding of one byte of a string ("\u00XX").
const jsonChar = 6

// PeerSize returns an upper bound on p's size in a frame.
func PeerSize(p *Peer) int {
	n := 200 + jsonChar*(len(p.Name)+len(p.Tag)+len(p.Mapping)) + 4*len(p.Key)/3
	n += 48 * len(p.IPs)
	n += 56 * len(p.Endpoints)
	for _, nw := range p.Networks {
		n += 3 + jsonChar*len(nw)
	}
	return n
}

// ACLSize returns an upper bound on a's size in a frame.
func ACLSize(a *ACL) int {
	n := 40 + jsonChar*len(a.Network)
	for _, r := range a.Rules {
		n += 40
		for _, list := range [][]string{r.From, r.To, r.Ports} {
			for _, e := range list {
				n += 3 + jsonChar*len(e)
			}
		}
	}
	return n
}

// ReadPeerMap returns the whole peer map that first begins: first itself if it is complete, else
// first's peers and rules followed by those of the frames read from r up to the one without More,
// within MaxMapPeers and MaxMapFrames.
func ReadPeerMap(r io.Reader, first *PeerMap) (*PeerMap, error) {
	if !first.More {
		return first, nil
	}
	pm := &PeerMap{Peers: first.Peers, ACLs: first.ACLs}
	for frames := 1; ; frames++ {
		if frames >= MaxMapFrames {
			return nil, fmt.Errorf("peer map: more than %d frames", MaxMapFrames)
		}
		m, err := ReadMsg(r)
		if err != nil {
			return nil, fmt.Errorf("peer map frame %d: %w", frames+1, err)
		}
		if m.Type != TypePeerMap {
			return nil, fmt.Errorf("peer map frame %d: got %q", frames+1, m.Type)
		}
		if len(pm.Peers)+len(m.PeerMap.Peers) > MaxMapPeers {
			return nil, fmt.Errorf("peer map: more than %d peers", MaxMapPeers)
		}
		if len(pm.ACLs)+len(m.PeerMap.ACLs) > MaxNetworks {
			return nil, errors.New("peer map: too many ACLs")
		}
		pm.Peers = append(pm.Peers, m.PeerMap.Peers...)
		pm.ACLs = append(pm.ACLs, m.PeerMap.ACLs...)
		if !m.PeerMap.More {
			return pm, nil
		}
	}
}

// ValidPeerMap checks a whole peer map, as ReadPeerMap returns it, with the limits of its frames
// (for a map that comes from elsewhere, such as a cache file).
func ValidPeerMap(pm *PeerMap) error {
	if len(pm.Peers) > MaxMapPeers {
		return fmt.Errorf("more than %d peers", MaxMapPeers)
	}
	if err := checkACLs(pm.ACLs); err != nil {
		return err
	}
	for i := 0; i == 0 || i < len(pm.Peers); i += MaxPeers {
		if err := checkPeers(pm.Peers[i:min(i+MaxPeers, len(pm.Peers))]); err != nil {
			return err
		}
	}
	return nil
}
