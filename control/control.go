// Package control defines the versioned messages that a node and the coordination server exchange, and
// their framing on a QUIC stream. It is a leaf: standard library only, no knowledge of either side.
//
// # Wire format
//
// The node opens one bidirectional stream on its control connection (ALPN "warren-control/1"). Each
// message is a frame: a 4-byte big-endian length followed by that many bytes of JSON encoding one Msg.
// A frame longer than MaxFrameSize is refused and the connection is closed.
//
// # Conversation
//
//	node  → coord  Login            (first frame, exactly once)
//	coord → node   Welcome          (or Reply with an error, then close)
//	coord → node   PeerMap          (the full list of visible peers, then ...)
//	coord → node   PeerDelta        (... changes only, for as long as the connection lives; both carry ACLs)
//	node  → coord  Request{ID}      (network create/join/leave, owner actions, ACL set/clear/show, listings, or logout)
//	coord → node   Reply{ID}        (answer to the request with the same ID)
//	node  → coord  Endpoints        (the node's candidate addresses or NAT mapping changed)
package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Version is the protocol version a node sends in Login.
const Version = 1

// ALPN is the TLS application protocol of the control connection.
const ALPN = "warren-control/1"

// MaxFrameSize bounds one frame. A full peer map of a few thousand peers fits; anything larger is an
// error, never an allocation.
const MaxFrameSize = 4 << 20

// Limits on lists inside messages.
const (
	MaxPeers     = 10000
	MaxEndpoints = 16
	MaxNetworks  = 256
	MaxIPs       = 4
	MaxNameLen   = 64
	MaxPassword  = 1024
	MaxErrorLen  = 1024
	MaxAuthKey   = 256
	MaxTarget    = 128 // a node name or key fingerprint
	// ACL rule lists: rules per network, entries per From, To or Ports list, bytes per entry.
	MaxACLRules   = 64
	MaxACLEntries = 32
	MaxACLEntry   = 80
)

// The overlay's fixed ranges. Every overlay prefix and address lies inside them: the coord allocates
// only there, and a node refuses a Welcome or a peer whose prefixes or addresses fall outside, so that
// no coord can make a node send traffic for other addresses (a public one, its LAN) into the overlay
// or route them to its TUN device.
var (
	OverlayRange4 = netip.MustParsePrefix("100.64.0.0/10") // shared address space, RFC 6598
	OverlayRange6 = netip.MustParsePrefix("fc00::/7")      // unique local addresses, RFC 4193
)

// InOverlayRange reports whether every address of p lies inside OverlayRange4 or OverlayRange6.
func InOverlayRange(p netip.Prefix) bool {
	if !p.IsValid() || p.Addr().Zone() != "" {
		return false
	}
	for _, r := range []netip.Prefix{OverlayRange4, OverlayRange6} {
		if p.Addr().Is4() == r.Addr().Is4() && p.Bits() >= r.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// Type names a message kind.
type Type string

// Message types.
const (
	TypeLogin     Type = "login"
	TypeWelcome   Type = "welcome"
	TypePeerMap   Type = "peermap"
	TypePeerDelta Type = "peerdelta"
	TypeRequest   Type = "request"
	TypeReply     Type = "reply"
	TypeEndpoints Type = "endpoints"
)

// Msg is one control message: Type says which one of the pointer fields is set.
type Msg struct {
	Type      Type       `json:"type"`
	Login     *Login     `json:"login,omitempty"`
	Welcome   *Welcome   `json:"welcome,omitempty"`
	PeerMap   *PeerMap   `json:"peermap,omitempty"`
	PeerDelta *PeerDelta `json:"peerdelta,omitempty"`
	Request   *Request   `json:"request,omitempty"`
	Reply     *Reply     `json:"reply,omitempty"`
	Endpoints *Endpoints `json:"endpoints,omitempty"`
}

// Login is the node's first message. The node's identity is its TLS client key, not a field here.
type Login struct {
	Version   int              `json:"version"`
	Name      string           `json:"name"`
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"` // local candidate addresses of the node's UDP socket
	// AuthKey, if set, is a pre-authorised key from the coord's operator: the node joins the key's
	// network without a password (and becomes ephemeral or tagged if the key says so). At most
	// MaxAuthKey bytes. A node that already used the key may send it again on later logins.
	AuthKey string `json:"authkey,omitempty"`
	// Ephemeral asks the coord to remove the node (memberships, address) once it has been offline
	// for the coord's ephemeral timeout, or at once when it sends OpLogout. It cannot be undone.
	Ephemeral bool `json:"ephemeral,omitempty"`
}

// Welcome accepts a login.
type Welcome struct {
	IPv4     netip.Addr     `json:"ipv4"`
	IPv6     netip.Addr     `json:"ipv6"`
	Prefix4  netip.Prefix   `json:"prefix4"`  // the overlay's IPv4 pool
	Prefix6  netip.Prefix   `json:"prefix6"`  // the overlay's IPv6 pool
	Observed netip.AddrPort `json:"observed"` // the node's address as the coord sees it (reflexive)
	Networks []string       `json:"networks"`
	// ProbePort is a second UDP port on the coord's address that answers binding requests, so the
	// node can tell endpoint-independent NAT mappings from endpoint-dependent ones; 0 = none.
	ProbePort uint16 `json:"probe_port,omitempty"`
	// Relay reports that the coord relays packets between peers (relay frames on its main port).
	Relay bool `json:"relay,omitempty"`
	// Relays are standalone relays (relaylogin.go), in the coord operator's order of preference; at
	// most MaxRelays. A node that supports them logs in to all of them and relays through the first
	// one it shares with the peer, the coord's own relay (Relay) last; every node of a coord gets the
	// same order, so peers agree on it.
	Relays []Relay `json:"relays,omitempty"`
	// Ephemeral reports that the coord removes this node when it goes offline (see Login.Ephemeral);
	// such a node sends OpLogout when it shuts down cleanly.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Tag is the node's own tag (from the auth key it joined with), which ACL rules may name.
	Tag string `json:"tag,omitempty"`
	// Name is the node's name as the coord knows it: the one stored with its key at its first
	// login, or set since with OpRename. A later Login.Name that differs does not rename the node;
	// the node goes by this name (and says so).
	Name string `json:"name,omitempty"`
}

// Peer describes one node visible to the receiver (they share at least one network).
type Peer struct {
	Key       []byte           `json:"key"` // Ed25519 public key, 32 bytes
	Name      string           `json:"name"`
	IPs       []netip.Addr     `json:"ips"`
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"`
	Online    bool             `json:"online"`
	Networks  []string         `json:"networks"`      // networks shared with the receiver
	Tag       string           `json:"tag,omitempty"` // from the auth key the peer joined with
	// Mapping is the peer's NAT mapping behaviour as it last reported it (Endpoints.Mapping).
	Mapping Mapping `json:"mapping,omitempty"`
	// Ports is how the peer's NAT allocates ports, as it last reported it (Endpoints.Ports).
	Ports *Ports `json:"ports,omitempty"`
}

// PeerMap replaces the receiver's whole view of its peers. A map too large for one frame comes as
// several, each but the last with More set (frames.go).
type PeerMap struct {
	Peers []Peer `json:"peers"`
	// ACLs are the rule lists of the receiver's networks that have one (see ACL).
	ACLs []ACL `json:"acls,omitempty"`
	// More says that more frames of this map follow: the receiver applies them all together.
	More bool `json:"more,omitempty"`
}

// PeerDelta changes the receiver's view: peers in Upsert are added or replaced (matched by key), keys
// in Remove are no longer visible (no shared network left).
type PeerDelta struct {
	Upsert []Peer   `json:"upsert,omitempty"`
	Remove [][]byte `json:"remove,omitempty"`
	// Networks, if set, replaces the receiver's list of networks: it changed without a request of
	// the receiver's own (an owner approved its join, kicked or banned it, or deleted a network).
	Networks *NetworkList `json:"networks,omitempty"`
	// ACLs replace the rule lists of the networks they name; one without rules clears the network's.
	ACLs []ACL `json:"acls,omitempty"`
	// Joins, if set, replaces the receiver's list of join requests awaiting its approval, in the
	// networks it owns: sent after login and whenever the list changes.
	Joins *JoinRequests `json:"joins,omitempty"`
}

// MaxJoinRequests bounds JoinRequests.Requests; the rest are counted in More.
const MaxJoinRequests = 64

// JoinRequests lists the join requests awaiting the receiver's approval, oldest first.
type JoinRequests struct {
	Requests []JoinRequest `json:"requests"`
	More     int           `json:"more,omitempty"` // requests beyond MaxJoinRequests, not listed
}

// JoinRequest is one node waiting to join a network the receiver owns.
type JoinRequest struct {
	Network string    `json:"network"`
	Name    string    `json:"name"`
	Key     string    `json:"key"` // fingerprint, "SHA256:..."
	At      time.Time `json:"at"`  // when it asked
}

// NetworkList is the full list of a node's networks.
type NetworkList struct {
	Names []string `json:"names"`
}

// ACLRule lets the members named in From reach the Ports of the members named in To. Entries are
// strings as in the rule file (package acl parses and evaluates them): a node name, "tag:NAME" or "*";
// ports "PORT[-PORT][/tcp|/udp]", "*/tcp", "icmp" or "*".
type ACLRule struct {
	From  []string `json:"from"`
	To    []string `json:"to"`
	Ports []string `json:"ports"`
}

// ACL is a network's rule list, enforced by the receiving node. No rules: members reach each other's
// exposed ports. Rules: only what a rule allows, and only on exposed ports.
type ACL struct {
	Network string    `json:"network"`
	Rules   []ACLRule `json:"rules"`
}

// Op is a network operation.
type Op string

// Network operations.
const (
	OpCreate Op = "create"
	OpJoin   Op = "join"
	OpLeave  Op = "leave"
	// OpLogout ends the node's session for good (Network and Password empty): an ephemeral node is
	// removed at once, its peers are told; for other nodes it changes nothing.
	OpLogout Op = "logout"

	// Owner actions (Network set; the sender must own it). Target names the node acted on: its
	// name in the network, or its key fingerprint ("SHA256:...") when names are ambiguous.
	OpApprove  Op = "approve"  // a pending join (Target) becomes a membership
	OpDeny     Op = "deny"     // a pending join (Target) is dropped
	OpKick     Op = "kick"     // Target's membership is removed; it may join again
	OpBan      Op = "ban"      // kick, and Target may not join (or ask to) until OpUnban
	OpUnban    Op = "unban"    // lifts a ban on Target
	OpLock     Op = "lock"     // no new joins (members stay)
	OpUnlock   Op = "unlock"   // joins allowed again
	OpPassword Op = "password" // Password becomes the network's password ("" = none)
	OpApproval Op = "approval" // Approval says whether joins need the owner's approval
	OpTransfer Op = "transfer" // Target (a member) becomes the owner
	OpDelete   Op = "delete"   // the network and its memberships are deleted; members are told
	// Listings: OpMembers (any member; pending and banned entries for the owner only) and OpPending
	// (the owner) answer with Reply.Members.
	OpMembers Op = "members"
	OpPending Op = "pending"
	// OpACLSet replaces the network's rule list with Request.Rules (owner only); OpACLClear removes it
	// (owner only); OpACLShow returns it in Reply.ACL (members). Peers get the change in a PeerDelta.
	OpACLSet   Op = "acl_set"
	OpACLClear Op = "acl_clear"
	OpACLShow  Op = "acl_show"
	// OpRename gives the sending node the name Request.Name (Network empty). Names are unique among
	// the nodes that share a network: a name another node there has is refused (CodeNameTaken).
	// Peers get the new name in a PeerDelta; access rules follow the key, not the name.
	OpRename Op = "rename"
)

// IsOwnerAction reports whether op is an owner action or a listing (everything but create, join, leave
// and logout).
func (op Op) IsOwnerAction() bool {
	switch op {
	case OpApprove, OpDeny, OpKick, OpBan, OpUnban, OpLock, OpUnlock, OpPassword, OpApproval, OpTransfer,
		OpDelete, OpMembers, OpPending:
		return true
	}
	return false
}

// NeedsTarget reports whether op acts on one node named by Request.Target.
func (op Op) NeedsTarget() bool {
	switch op {
	case OpApprove, OpDeny, OpKick, OpBan, OpUnban, OpTransfer:
		return true
	}
	return false
}

// Request asks the coord to act on a network for the sending node, or to log it out (OpLogout).
type Request struct {
	ID       uint64    `json:"id"`
	Op       Op        `json:"op"`
	Network  string    `json:"network"`
	Password string    `json:"password,omitempty"`
	Rules    []ACLRule `json:"rules,omitempty"` // OpACLSet only
	// Target is the node an owner action acts on (see OpApprove ... OpTransfer).
	Target string `json:"target,omitempty"`
	// Approval: with OpCreate or OpApproval, whether joins need the owner's approval.
	Approval bool `json:"approval,omitempty"`
	// Name is the node's new name (OpRename only).
	Name string `json:"name,omitempty"`
	// Open: with OpCreate, OpPassword (no password) or OpApproval (off), the network is to take
	// anyone who names it, without a password or approval. Without it the coord refuses to leave a
	// network with neither (CodeUnprotected): networks are closed unless their owner says otherwise.
	Open bool `json:"open,omitempty"`
	// All: with OpDeny and no Target, every pending join of the network is dropped (Reply.Members
	// lists them).
	All bool `json:"all,omitempty"`
}

// TargetOK reports whether r names the node its op acts on, or none if it acts on none (OpDeny with
// All acts on every pending join, and names none).
func (r *Request) TargetOK() bool {
	if r.All {
		return r.Op == OpDeny && r.Target == ""
	}
	return r.Op.NeedsTarget() == (r.Target != "")
}

// Code classifies an error in a Reply so callers can react without parsing text.
type Code string

// Reply error codes.
const (
	CodeNotFound      Code = "not_found"
	CodeExists        Code = "exists"
	CodeWrongPassword Code = "wrong_password"
	CodeNotMember     Code = "not_member"
	CodeInvalid       Code = "invalid"
	CodeRefused       Code = "refused"
	CodeInternal      Code = "internal"
	CodeVersion       Code = "version"
	// CodeAuthKey refuses a login whose auth key is unknown, expired, revoked or used up; retrying
	// with the same key cannot succeed.
	CodeAuthKey Code = "authkey"
	// CodeBlocked refuses a login from an address range the server operator blocked.
	CodeBlocked Code = "blocked"
	// CodeRateLimited refuses a login over the server's rate limit per address or identity, or a
	// request over the server's rate per node (a burst, then a steady rate); retry later.
	CodeRateLimited Code = "rate_limited"
	// CodeNotOwner refuses an owner action from a node that does not own the network.
	CodeNotOwner Code = "not_owner"
	// CodePending answers a join to a network that needs its owner's approval: the request is
	// recorded and the node becomes a member (and is told, with a PeerDelta) once approved.
	CodePending Code = "pending"
	// CodeBanned refuses a join from a node the network's owner banned.
	CodeBanned Code = "banned"
	// CodeLocked refuses a join to a network its owner locked against new members.
	CodeLocked Code = "locked"
	// CodeTooManyNetworks refuses a create or join that would put the node in more networks than
	// the server allows per node.
	CodeTooManyNetworks Code = "too_many_networks"
	// CodeNetworkFull refuses a join (or approval) to a network that has as many members as the
	// server allows per network.
	CodeNetworkFull Code = "network_full"
	// CodeNameTaken refuses a join, approval or rename that would give two nodes that share a
	// network one name: names are identities (DNS names, access rules), so they are unique there.
	CodeNameTaken Code = "name_taken"
	// CodeUnprotected refuses to create a network with neither a password nor approval, or to take
	// the last of them away, unless the request says Open: anyone who guessed the name could join.
	CodeUnprotected Code = "unprotected"
	// CodeClosed refuses a join to a network that has neither a password nor approval and is not
	// open: only auth keys bring nodes into it.
	CodeClosed Code = "closed"
	// CodeTooManyRequests refuses a join request (pending approval) beyond what one source may have
	// waiting: per node key and per source address (IPv4 address, IPv6 /64).
	CodeTooManyRequests Code = "too_many_requests"
	// CodeStorageFull refuses what needs a write while the server's storage is full (a new node's
	// login, a network change); nothing is wrong with the request: retry later.
	CodeStorageFull Code = "storage_full"
)

// Transient reports whether a refusal with code c is the server's passing trouble rather than an
// answer about the request: a node retries those (with backoff) instead of giving up. Refusals that
// need a person (a bad auth key, a ban, a bad name) are not transient.
func (c Code) Transient() bool {
	switch c {
	case CodeRateLimited, CodeStorageFull, CodeInternal:
		return true
	}
	return false
}

// Member states in Reply.Members.
const (
	MemberActive  = "member"
	MemberPending = "pending"
	MemberBanned  = "banned"
)

// Member is one entry of a network's roster (Reply.Members).
type Member struct {
	Name   string       `json:"name"`
	Key    string       `json:"key"` // fingerprint, "SHA256:..."
	IPs    []netip.Addr `json:"ips"`
	Online bool         `json:"online"`
	Owner  bool         `json:"owner"`
	State  string       `json:"state"` // MemberActive, MemberPending or MemberBanned
}

// Reply answers a Request with the same ID (or a Login, with ID 0). Code is empty on success.
type Reply struct {
	ID       uint64   `json:"id"`
	Code     Code     `json:"code,omitempty"`
	Error    string   `json:"error,omitempty"`
	Networks []string `json:"networks,omitempty"` // the node's networks after the operation
	Members  []Member `json:"members,omitempty"`  // answer to OpMembers and OpPending
	ACL      *ACL     `json:"acl,omitempty"`      // OpACLSet, OpACLClear, OpACLShow: the rules now
	Name     string   `json:"name,omitempty"`     // OpRename: the node's name now
}

// Err returns the reply's error, or nil on success.
func (r *Reply) Err() error {
	if r.Code == "" {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Error}
}

// Error is a failed request as seen by the node.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Endpoints updates the node's local candidate addresses and what it found out about its NAT.
type Endpoints struct {
	Endpoints []netip.AddrPort `json:"endpoints"`
	// Mapping is the node's NAT mapping behaviour from its NAT discovery; peers use it to pick a
	// hole-punching technique. Empty = not known.
	Mapping Mapping `json:"mapping,omitempty"`
	// Ports, with MappingDependent only, says that the NAT allocates its ports predictably, and
	// where it was: peers aim at the ports it will allocate next. nil = random or not known.
	Ports *Ports `json:"ports,omitempty"`
}

// MaxPortDelta bounds Ports.Delta: a NAT that steps further between mappings is not predicted.
const MaxPortDelta = 16

// Ports is the port allocation pattern of an endpoint-dependent NAT that allocates sequentially: its
// next mapping takes public port Last+Delta, the one after Last+2·Delta, and so on (as long as nothing
// else behind it opens mappings in between).
type Ports struct {
	Delta int    `json:"delta"` // the step between consecutive mappings: 1…MaxPortDelta or −MaxPortDelta…−1
	Last  uint16 `json:"last"`  // the public port of the last mapping NAT discovery saw; never 0
}

// Valid reports whether p is a pattern a node may act on (nil is valid: no pattern).
func (p *Ports) Valid() bool {
	return p == nil || p.Last != 0 && p.Delta != 0 && p.Delta >= -MaxPortDelta && p.Delta <= MaxPortDelta
}

// checkPorts checks a pattern that comes with mapping m: only an endpoint-dependent NAT has one.
func checkPorts(what string, m Mapping, p *Ports) error {
	if p == nil {
		return nil
	}
	if m != MappingDependent {
		return fmt.Errorf("%s: a port pattern with mapping %.32q", what, m)
	}
	if !p.Valid() {
		return fmt.Errorf("%s: invalid port pattern (delta %d, last port %d)", what, p.Delta, p.Last)
	}
	return nil
}

// Mapping is a NAT's mapping behaviour (RFC 4787): whether it keeps one public address and port for
// a local socket whatever the destination.
type Mapping string

// Mapping behaviours.
const (
	MappingUnknown     Mapping = ""
	MappingIndependent Mapping = "endpoint-independent" // one public port per socket (or no NAT)
	MappingDependent   Mapping = "endpoint-dependent"   // a new public port per destination ("symmetric")
)

func (m Mapping) valid() bool {
	return m == MappingUnknown || m == MappingIndependent || m == MappingDependent
}

// ErrFrameTooLarge is returned when a frame exceeds MaxFrameSize, on reading or writing.
var ErrFrameTooLarge = errors.New("control frame too large")

// ReadMsg reads one frame from r and decodes and validates it.
func ReadMsg(r io.Reader) (*Msg, error) { return ReadMsgMax(r, MaxFrameSize) }

// Frame limits for what a node sends the coordination server: its login, and any frame after it
// (requests; the largest is a rule list, which the server stores only up to 8 KiB).
const (
	MaxLoginFrame = 16 << 10
	MaxNodeFrame  = 64 << 10
)

// ReadMsgMax reads one frame of at most max bytes (and at most MaxFrameSize). The body's buffer grows
// with the bytes that actually arrive, so a sender that announces a large frame and stalls holds no
// more memory than it sent.
func ReadMsgMax(r io.Reader, max int) (*Msg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[:]))
	if n > int64(min(max, MaxFrameSize)) {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	var body bytes.Buffer
	body.Grow(int(min(n, 4<<10)))
	if got, err := io.CopyN(&body, r, n); err != nil || got != n {
		return nil, fmt.Errorf("read control frame: %w", io.ErrUnexpectedEOF)
	}
	return Decode(body.Bytes())
}

// Decode parses and validates one frame body.
func Decode(b []byte) (*Msg, error) {
	if len(b) > MaxFrameSize {
		return nil, ErrFrameTooLarge
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode control message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("invalid control message: %w", err)
	}
	return &m, nil
}

// WriteMsg validates m, encodes it and writes it to w as one frame.
func WriteMsg(w io.Writer, m *Msg) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Encode returns m as one frame (length prefix included).
func Encode(m *Msg) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encode control message: %w", err)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode control message: %w", err)
	}
	if len(body) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(body))
	}
	out := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	return out, nil
}

// Timers returns the control connection's idle timeout and keep-alive period for a node that
// knows servers coords. The keep-alive is also how soon the coord sees a NAT rebinding, and QUIC
// takes the smaller idle timeout of the two sides (the coord's is 45 s), which bounds how long the
// coord takes to call a silent node offline.
//   - Several servers: keep-alives every 2 s, and three missed ones end the connection, so the node
//     moves to the next server within 6–8 s of a crash (QUIC restarts the idle timer when it sends a
//     keep-alive).
//   - One server: there is nowhere to move to, so only the NAT mapping, the coord's view of the node
//     and rebinding matter: keep-alives every 22 s, under the 30 s that the shortest-lived NAT
//     mappings and stateful firewalls keep an idle UDP flow (WireGuard's advice for its persistent
//     keep-alive is 25 s), and under half the 45 s idle timeout, the most quic-go sends them at. A
//     lost keep-alive is an ack-eliciting packet: QUIC's probe timeout sends it again within about
//     a second, doubling, so a path that drops packets for less than about 20 s keeps the
//     connection. On a node whose peer links wound down (package peer, idle.go) these keep-alives
//     are all that still wakes it, and each costs the coord a QUIC exchange. Each exchange costs the
//     node about 50 thread wake-ups, nearly all of them Go's sysmon thread (measured with strace on
//     an idle node; BENCHMARKS.md, "Changes of stop 37"): sysmon wakes at the keep-alive timer's
//     exact time, but the netpoller's epoll_pwait, which runs the timer, comes back up to 0.1% of
//     its timeout late (the kernel's timer slack for a 22 s wait is 22 ms), and sysmon polls every
//     20 µs until it does. So the only lever in the program is how often the exchange happens.
func Timers(coords int) (idle, keepAlive time.Duration) {
	if coords > 1 {
		return 6 * time.Second, 2 * time.Second
	}
	return 45 * time.Second, 22 * time.Second
}
