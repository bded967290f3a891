package control

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// worstString is n bytes that JSON encodes at their largest (each as \u00XX).
func worstString(n int) string { return strings.Repeat("\x01", n) }

func bigPeer(i int) Peer {
	p := Peer{Key: bytes.Repeat([]byte{byte(i)}, 32), Name: worstString(MaxNameLen), Tag: worstString(MaxNameLen),
		Online: true, Mapping: MappingDependent}
	for j := range MaxIPs {
		p.IPs = append(p.IPs, netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff0"+string(rune('0'+j))))
	}
	for j := range MaxEndpoints {
		p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), uint16(65535-j)))
	}
	for j := range 20 {
		p.Networks = append(p.Networks, worstString(MaxNameLen-2)+string(rune('a'+j)))
	}
	return p
}

// TestSizeBounds: PeerSize and ACLSize are upper bounds of the JSON encoding, also at the limits and
// for strings that encode at 6 bytes a byte.
func TestSizeBounds(t *testing.T) {
	peers := []Peer{bigPeer(1), {Key: make([]byte, 32), Name: "a", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		p := Peer{Key: make([]byte, 32), Name: randString(r, 1+r.IntN(MaxNameLen)), IPs: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})}}
		for range r.IntN(MaxEndpoints + 1) {
			p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(r.Uint32()), 2, 3, 4}), uint16(1+r.IntN(65535))))
		}
		for range r.IntN(5) {
			p.Networks = append(p.Networks, randString(r, 1+r.IntN(MaxNameLen)))
		}
		peers = append(peers, p)
	}
	for _, p := range peers {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > PeerSize(&p) {
			t.Fatalf("peer %q encodes to %d bytes, bound %d", p.Name, len(b), PeerSize(&p))
		}
	}
	var a ACL
	a.Network = worstString(MaxNameLen)
	for range MaxACLRules {
		var rule ACLRule
		for range MaxACLEntries {
			rule.From = append(rule.From, worstString(MaxACLEntry))
			rule.To = append(rule.To, worstString(MaxACLEntry))
			rule.Ports = append(rule.Ports, worstString(MaxACLEntry-3)+"<&>")
		}
		a.Rules = append(a.Rules, rule)
	}
	b, _ := json.Marshal(a)
	if len(b) > ACLSize(&a) {
		t.Fatalf("ACL encodes to %d bytes, bound %d", len(b), ACLSize(&a))
	}
	if ACLSize(&a) > MaxFrameSize-FrameBudget {
		t.Fatalf("the largest ACL (%d bytes) does not fit a frame beside a full budget", ACLSize(&a))
	}
}

func randString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func frames(t *testing.T, maps ...*PeerMap) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	for _, pm := range maps {
		if err := WriteMsg(&buf, &Msg{Type: TypePeerMap, PeerMap: pm}); err != nil {
			t.Fatal(err)
		}
	}
	return &buf
}

func TestReadPeerMap(t *testing.T) {
	p := func(i int) Peer {
		return Peer{Key: bytes.Repeat([]byte{byte(i)}, 32), Name: "n", IPs: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})}}
	}
	acl := ACL{Network: "lan", Rules: []ACLRule{{From: []string{"*"}, To: []string{"*"}, Ports: []string{"22"}}}}

	// Complete in one frame: returned as it is, nothing read.
	one := &PeerMap{Peers: []Peer{p(1)}}
	if got, err := ReadPeerMap(strings.NewReader(""), one); err != nil || got != one {
		t.Fatalf("one frame: %v %v", got, err)
	}
	// Three frames.
	r := frames(t, &PeerMap{Peers: []Peer{p(2), p(3)}, More: true}, &PeerMap{Peers: []Peer{p(4)}}, &PeerMap{Peers: []Peer{p(9)}})
	got, err := ReadPeerMap(r, &PeerMap{ACLs: []ACL{acl}, Peers: []Peer{p(1)}, More: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Peers) != 4 || got.Peers[3].IPs[0] != p(4).IPs[0] || len(got.ACLs) != 1 || got.More {
		t.Fatalf("assembled %+v", got)
	}
	if r.Len() == 0 {
		t.Fatal("read beyond the map's last frame")
	}
	// A frame of another kind, the stream ending, or endless frames: errors.
	var buf bytes.Buffer
	WriteMsg(&buf, &Msg{Type: TypePeerDelta, PeerDelta: &PeerDelta{}})
	if _, err := ReadPeerMap(&buf, &PeerMap{More: true}); err == nil {
		t.Error("a delta inside a peer map was accepted")
	}
	if _, err := ReadPeerMap(frames(t, &PeerMap{More: true}), &PeerMap{More: true}); err == nil {
		t.Error("a truncated map was accepted")
	}
	endless := make([]*PeerMap, MaxMapFrames+1)
	for i := range endless {
		endless[i] = &PeerMap{More: true}
	}
	if _, err := ReadPeerMap(frames(t, endless...), &PeerMap{More: true}); err == nil || !strings.Contains(err.Error(), "frames") {
		t.Errorf("endless map: %v", err)
	}
}

func TestValidPeerMap(t *testing.T) {
	peers := make([]Peer, MaxPeers+5) // more than a frame may hold
	for i := range peers {
		peers[i] = Peer{Key: make([]byte, 32), Name: "n", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}
	}
	if err := ValidPeerMap(&PeerMap{Peers: peers}); err != nil {
		t.Fatal(err)
	}
	peers[MaxPeers+2].Endpoints = []netip.AddrPort{netip.MustParseAddrPort("[fe80::1%eth0]:5")}
	if err := ValidPeerMap(&PeerMap{Peers: peers}); err == nil {
		t.Error("an endpoint with a zone in the second chunk was accepted")
	}
	if err := ValidPeerMap(&PeerMap{}); err != nil {
		t.Errorf("empty map: %v", err)
	}
}
