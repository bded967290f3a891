// Package relay forwards end-to-end encrypted QUIC packets between nodes by key: the relay half of
// warren's NAT traversal. Nodes send relay frames (control's side channel, kinds 0x21 and 0x22) on the
// same UDP socket their QUIC connections use; a frame is attributed to the node whose authenticated
// connection comes from the frame's source address, and forwarded only to a node bound in the Table
// when both consent to each other, to that node's address, within the sender's packet rate.
//
// The coordination server uses a Table with consent from its membership data (nodes that share a
// network); Server is the standalone relay (warren-coord relay), which has no membership data and takes
// consent from the nodes themselves (control's relay login). Both serve frames with Serve. The payload
// is the peers' own QUIC: the relay sees keys and ciphertext, never overlay traffic. It does not
// know about networks, logins to the coord, or what the packets carry.
package relay

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/time/rate"
)

// Key is a node's Ed25519 public key.
type Key = [32]byte

// Consent says whom a node agrees to exchange relayed packets with. Allows is called for every
// relayed packet, from the forwarding loop: it must be fast and safe for concurrent use.
type Consent interface {
	Allows(k Key) bool
}

// KeySet is an immutable Consent: the sorted, deduplicated keys a node named.
type KeySet []Key

// NewKeySet returns the set of keys.
func NewKeySet(keys []Key) KeySet {
	s := slices.Clone(keys)
	slices.SortFunc(s, func(a, b Key) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(s)
}

// Allows reports whether k is in the set.
func (s KeySet) Allows(k Key) bool {
	_, ok := slices.BinarySearchFunc(s, k, func(a, b Key) int { return bytes.Compare(a[:], b[:]) })
	return ok
}

// DefaultRate is the default bound on relayed packets per second per node (about 27 MB/s of
// full-size packets).
const DefaultRate = 20000

// Member is a node bound in a Table: its key, where its authenticated connection comes from, whom it
// consents to, and its packet budget.
type Member struct {
	key     Key
	consent Consent
	limiter *rate.Limiter

	// under Table.mu
	addr netip.AddrPort
	ua   *net.UDPAddr // addr, kept so forwarding does not allocate one per packet
}

// Key returns the member's key.
func (m *Member) Key() Key { return m.key }

// Table maps nodes' addresses and keys to members and decides where a relay frame goes. Methods are
// safe for concurrent use.
type Table struct {
	rate  rate.Limit
	burst int
	stats Stats // what Serve and Route did with frames

	// mu guards the following.
	mu     sync.RWMutex
	byKey  map[Key]*Member
	byAddr map[netip.AddrPort]*Member
}

// NewTable returns an empty table whose members may each send packetsPerSecond relayed packets
// (0 = DefaultRate), with bursts of a tenth of that.
func NewTable(packetsPerSecond int) *Table {
	if packetsPerSecond <= 0 {
		packetsPerSecond = DefaultRate
	}
	return &Table{rate: rate.Limit(packetsPerSecond), burst: packetsPerSecond/10 + 1,
		byKey: make(map[Key]*Member), byAddr: make(map[netip.AddrPort]*Member)}
}

// Bind registers the node with key at addr, the address its authenticated connection comes from, with
// its consent. A member bound before with the same key or at the same address loses that binding (a
// newer login wins). addr must be valid.
func (t *Table) Bind(key Key, addr netip.AddrPort, c Consent) *Member {
	addr = unmap(addr)
	m := &Member{key: key, consent: c, limiter: rate.NewLimiter(t.rate, t.burst), addr: addr, ua: net.UDPAddrFromAddrPort(addr)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byKey[key]; old != nil && t.byAddr[old.addr] == old {
		delete(t.byAddr, old.addr)
	}
	if prev := t.byAddr[addr]; prev != nil && prev.key != key && t.byKey[prev.key] == prev {
		delete(t.byKey, prev.key) // another node had this address: its NAT mapping is gone
	}
	t.byKey[key] = m
	t.byAddr[addr] = m
	return m
}

// Move follows m to a new address (its NAT rebound and QUIC migrated the connection). It does nothing if
// m is no longer bound.
func (t *Table) Move(m *Member, to netip.AddrPort) {
	to = unmap(to)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byKey[m.key] != m || m.addr == to {
		return
	}
	if t.byAddr[m.addr] == m {
		delete(t.byAddr, m.addr)
	}
	m.addr, m.ua = to, net.UDPAddrFromAddrPort(to)
	t.byAddr[to] = m
}

// Addr returns where m is bound.
func (t *Table) Addr(m *Member) netip.AddrPort {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return m.addr
}

// Unbind removes m if it is still bound and reports whether it was.
func (t *Table) Unbind(m *Member) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byAddr[m.addr] == m {
		delete(t.byAddr, m.addr)
	}
	if t.byKey[m.key] != m {
		return false
	}
	delete(t.byKey, m.key)
	return true
}

// Len returns how many nodes are bound.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byKey)
}

// Route decides where a frame from address from, addressed to node dst, goes: to dst's address, with the
// sender's key, if from is a bound node within its packet rate, dst is bound, and the two consent to
// each other. A frame a node addresses to itself goes nowhere.
func (t *Table) Route(from netip.AddrPort, dst Key) (to *net.UDPAddr, src Key, ok bool) {
	t.mu.RLock()
	s, d := t.byAddr[from], t.byKey[dst]
	if d != nil {
		to = d.ua
	}
	t.mu.RUnlock()
	switch {
	case s == nil:
		t.stats.drop(DropUnknownSource)
	case d == nil || s == d:
		t.stats.drop(DropUnknownDest)
	case !s.limiter.Allow():
		t.stats.drop(DropRateLimited)
	case !s.consent.Allows(dst) || !d.consent.Allows(s.key):
		t.stats.drop(DropNoConsent)
	default:
		return to, s.key, true
	}
	return nil, Key{}, false
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
