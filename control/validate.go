package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/warren-net/warren/internal/naming"
)

// Validate checks that exactly the field named by Type is set and that every list and string is within
// its limit. It never trusts the peer that sent the message.
func (m *Msg) Validate() error {
	set := 0
	for _, p := range []bool{m.Login != nil, m.Welcome != nil, m.PeerMap != nil, m.PeerDelta != nil,
		m.Request != nil, m.Reply != nil, m.Endpoints != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("message %q must carry exactly one body, has %d", m.Type, set)
	}
	switch m.Type {
	case TypeLogin:
		if m.Login == nil {
			return errMissing(m.Type)
		}
		if err := checkName("name", m.Login.Name); err != nil {
			return err
		}
		if len(m.Login.AuthKey) > MaxAuthKey {
			return fmt.Errorf("login: auth key longer than %d bytes", MaxAuthKey)
		}
		return checkEndpoints(m.Login.Endpoints)
	case TypeWelcome:
		if m.Welcome == nil {
			return errMissing(m.Type)
		}
		w := m.Welcome
		if !w.IPv4.Is4() || !w.IPv6.Is6() || !w.Prefix4.IsValid() || !w.Prefix6.IsValid() {
			return errors.New("welcome: missing or wrong-family address")
		}
		if !InOverlayRange(w.Prefix4) || !InOverlayRange(w.Prefix6) {
			return fmt.Errorf("welcome: overlay prefixes %v, %v are not inside %v and %v", w.Prefix4, w.Prefix6, OverlayRange4, OverlayRange6)
		}
		if !w.Prefix4.Contains(w.IPv4) || !w.Prefix6.Contains(w.IPv6) {
			return fmt.Errorf("welcome: addresses %v, %v are not inside the overlay prefixes %v, %v", w.IPv4, w.IPv6, w.Prefix4, w.Prefix6)
		}
		if w.Tag != "" {
			if err := ValidNodeName(w.Tag); err != nil {
				return fmt.Errorf("welcome: tag: %w", err)
			}
		}
		if w.Name != "" {
			if err := ValidNodeName(w.Name); err != nil {
				return fmt.Errorf("welcome: %w", err)
			}
		}
		if err := checkRelays(w.Relays); err != nil {
			return err
		}
		return checkNames(w.Networks)
	case TypePeerMap:
		if m.PeerMap == nil {
			return errMissing(m.Type)
		}
		if err := checkACLs(m.PeerMap.ACLs); err != nil {
			return err
		}
		return checkPeers(m.PeerMap.Peers)
	case TypePeerDelta:
		if m.PeerDelta == nil {
			return errMissing(m.Type)
		}
		if err := checkPeers(m.PeerDelta.Upsert); err != nil {
			return err
		}
		if nl := m.PeerDelta.Networks; nl != nil {
			if err := checkNames(nl.Names); err != nil {
				return err
			}
		}
		if err := checkACLs(m.PeerDelta.ACLs); err != nil {
			return err
		}
		if err := checkJoins(m.PeerDelta.Joins); err != nil {
			return err
		}
		if len(m.PeerDelta.Remove) > MaxPeers {
			return errors.New("peerdelta: too many removals")
		}
		for _, k := range m.PeerDelta.Remove {
			if len(k) != 32 {
				return errors.New("peerdelta: bad key length")
			}
		}
		return nil
	case TypeRequest:
		r := m.Request
		if r == nil {
			return errMissing(m.Type)
		}
		if len(r.Target) > MaxTarget {
			return errors.New("request: target too long")
		}
		if !r.TargetOK() {
			return fmt.Errorf("request: op %q with a wrong target", r.Op)
		}
		if r.Open && r.Op != OpCreate && r.Op != OpPassword && r.Op != OpApproval {
			return fmt.Errorf("request: %s takes no open", r.Op)
		}
		switch {
		case r.Op == OpCreate, r.Op == OpJoin, r.Op == OpLeave, r.Op.IsOwnerAction(), r.Op == OpACLClear, r.Op == OpACLShow:
		case r.Op == OpACLSet:
			if len(r.Rules) == 0 {
				return errors.New("request: acl_set without rules")
			}
		case r.Op == OpLogout:
			if r.Network != "" || r.Password != "" {
				return errors.New("request: logout takes no network or password")
			}
			return nil
		case r.Op == OpRename:
			if r.Network != "" || r.Password != "" || len(r.Rules) > 0 {
				return errors.New("request: rename takes only a name")
			}
			return checkName("name", r.Name)
		default:
			return fmt.Errorf("request: unknown op %q", r.Op)
		}
		if err := checkName("network", r.Network); err != nil {
			return err
		}
		if len(r.Password) > MaxPassword {
			return errors.New("request: password too long")
		}
		if r.Name != "" {
			return fmt.Errorf("request: %s takes no name", r.Op)
		}
		if r.Op != OpACLSet && len(r.Rules) > 0 {
			return fmt.Errorf("request: %s takes no rules", r.Op)
		}
		return checkRules(r.Rules)
	case TypeReply:
		if m.Reply == nil {
			return errMissing(m.Type)
		}
		if len(m.Reply.Error) > MaxErrorLen {
			return errors.New("reply: error text too long")
		}
		if err := CheckText(m.Reply.Error); err != nil {
			return fmt.Errorf("reply: error text: %w", err)
		}
		if m.Reply.Name != "" {
			if err := ValidNodeName(m.Reply.Name); err != nil {
				return fmt.Errorf("reply: %w", err)
			}
		}
		if !validCode(m.Reply.Code) {
			return fmt.Errorf("reply: malformed error code %.40q", m.Reply.Code)
		}
		if err := checkMembers(m.Reply.Members); err != nil {
			return err
		}
		if m.Reply.ACL != nil {
			if err := checkACLs([]ACL{*m.Reply.ACL}); err != nil {
				return err
			}
		}
		return checkNames(m.Reply.Networks)
	case TypeEndpoints:
		if m.Endpoints == nil {
			return errMissing(m.Type)
		}
		if !m.Endpoints.Mapping.valid() {
			return fmt.Errorf("endpoints: unknown mapping %.32q", m.Endpoints.Mapping)
		}
		if err := checkPorts("endpoints", m.Endpoints.Mapping, m.Endpoints.Ports); err != nil {
			return err
		}
		return checkEndpoints(m.Endpoints.Endpoints)
	default:
		return fmt.Errorf("unknown message type %q", m.Type)
	}
}

func errMissing(t Type) error { return fmt.Errorf("message %q without its body", t) }

func checkName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%s must be 1-%d bytes", what, MaxNameLen)
	}
	return nil
}

func checkNames(names []string) error {
	if len(names) > MaxNetworks {
		return errors.New("too many networks")
	}
	for _, n := range names {
		if err := ValidNetworkName(n); err != nil {
			return err
		}
	}
	return nil
}

func checkEndpoints(eps []netip.AddrPort) error {
	if len(eps) > MaxEndpoints {
		return fmt.Errorf("too many endpoints (%d > %d)", len(eps), MaxEndpoints)
	}
	for _, ep := range eps {
		// A zone names another host's interface: meaningless here, and unbounded in size.
		if !ep.IsValid() || ep.Port() == 0 || ep.Addr().Zone() != "" {
			return fmt.Errorf("invalid endpoint %v", ep)
		}
	}
	return nil
}

func checkMembers(ms []Member) error {
	if len(ms) > MaxPeers {
		return errors.New("too many members")
	}
	for i := range ms {
		m := &ms[i]
		if err := checkMemberName(m.Name); err != nil {
			return err
		}
		if m.Key != "" && !validFingerprint(m.Key) || len(m.IPs) > MaxIPs {
			return errors.New("member: malformed key fingerprint, or address list too long")
		}
		switch m.State {
		case MemberActive, MemberPending, MemberBanned:
		default:
			return fmt.Errorf("member: unknown state %.20q", m.State)
		}
	}
	return nil
}

func checkJoins(j *JoinRequests) error {
	if j == nil {
		return nil
	}
	if len(j.Requests) > MaxJoinRequests || j.More < 0 {
		return errors.New("peerdelta: join requests out of bounds")
	}
	for _, r := range j.Requests {
		if err := checkName("join request network", r.Network); err != nil {
			return err
		}
		if err := checkName("join request node", r.Name); err != nil {
			return err
		}
		if len(r.Key) > MaxTarget {
			return errors.New("join request: key too long")
		}
	}
	return nil
}

func checkPeers(peers []Peer) error {
	if len(peers) > MaxPeers {
		return errors.New("too many peers")
	}
	for i := range peers {
		p := &peers[i]
		if len(p.Key) != 32 {
			return errors.New("peer: bad key length")
		}
		if err := ValidNodeName(p.Name); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		if len(p.IPs) == 0 || len(p.IPs) > MaxIPs {
			return errors.New("peer: needs 1-4 IPs")
		}
		for _, ip := range p.IPs {
			if !ip.IsValid() || ip.Zone() != "" {
				return errors.New("peer: invalid IP")
			}
			if !InOverlayRange(netip.PrefixFrom(ip, ip.BitLen())) {
				return fmt.Errorf("peer: IP %v is outside the overlay ranges", ip)
			}
		}
		if err := checkEndpoints(p.Endpoints); err != nil {
			return err
		}
		if err := checkNames(p.Networks); err != nil {
			return err
		}
		if !p.Mapping.valid() {
			return fmt.Errorf("peer: unknown mapping %.32q", p.Mapping)
		}
		if err := checkPorts("peer", p.Mapping, p.Ports); err != nil {
			return err
		}
		if p.Tag != "" {
			if err := ValidNodeName(p.Tag); err != nil {
				return fmt.Errorf("peer: tag: %w", err)
			}
		}
	}
	return nil
}

// checkACLs checks the limits of rule lists (their meaning is package acl's business).
func checkACLs(acls []ACL) error {
	if len(acls) > MaxNetworks {
		return errors.New("too many ACLs")
	}
	for i := range acls {
		if err := ValidNetworkName(acls[i].Network); err != nil {
			return fmt.Errorf("acl: %w", err)
		}
		if err := checkRules(acls[i].Rules); err != nil {
			return fmt.Errorf("acl of %q: %w", acls[i].Network, err)
		}
	}
	return nil
}

func checkRules(rules []ACLRule) error {
	if len(rules) > MaxACLRules {
		return fmt.Errorf("more than %d ACL rules", MaxACLRules)
	}
	for i := range rules {
		for _, list := range [][]string{rules[i].From, rules[i].To, rules[i].Ports} {
			if len(list) > MaxACLEntries {
				return fmt.Errorf("ACL rule %d: more than %d entries in a list", i+1, MaxACLEntries)
			}
			for _, e := range list {
				if e == "" || len(e) > MaxACLEntry {
					return fmt.Errorf("ACL rule %d: entries must be 1-%d bytes", i+1, MaxACLEntry)
				}
				if err := CheckText(e); err != nil {
					return fmt.Errorf("ACL rule %d: %w", i+1, err)
				}
			}
		}
	}
	return nil
}

// validCode reports whether c is empty or looks like a code: lower-case letters and '_', at most 32
// bytes. Codes this build does not know (CodeNotFound … CodeRateLimited) still pass, so a newer
// server's codes reach the caller as errors.
func validCode(c Code) bool {
	if len(c) > 32 {
		return false
	}
	for _, r := range c {
		if (r < 'a' || r > 'z') && r != '_' {
			return false
		}
	}
	return true
}

// Strings that come from the other side and end up on a terminal (names, errors) are checked here,
// on decoding, so that neither side has to trust the other: a node name is a DNS label, a network
// name is what the coord's store allows, and free text carries no control characters, terminal
// escapes or bidirectional overrides.

// ValidNodeName returns nil if name is a node name (also a tag): a lower-case DNS label, 1-63
// characters of a-z, 0-9 and '-', neither starting nor ending with '-' (the rule the coord's store
// applies too: internal/naming).
func ValidNodeName(name string) error { return naming.Node(name) }

// ValidNetworkName returns nil if name is a network name: 1-64 characters of a-z, 0-9, '-', '_'
// and '.'.
func ValidNetworkName(name string) error { return naming.Network(name) }

// checkMemberName accepts a roster name: a node name, or "key-" and a short key ID (base64url) for
// an entry whose node is gone.
func checkMemberName(name string) error {
	if id, ok := strings.CutPrefix(name, "key-"); ok && id != "" && len(name) <= 63 &&
		strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == "" {
		return nil
	}
	if err := ValidNodeName(name); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	return nil
}

// validFingerprint reports whether s looks like a key fingerprint: "SHA256:" and 43 base64url
// characters.
func validFingerprint(s string) bool {
	b64, ok := strings.CutPrefix(s, "SHA256:")
	return ok && len(b64) == 43 &&
		strings.Trim(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

// CheckText returns nil if s is safe to print on a terminal: valid UTF-8 without control characters
// (C0, DEL, C1: escape sequences start there) or bidirectional-text controls (which reorder what
// follows them on screen).
func CheckText(s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return errors.New("invalid UTF-8")
			}
		}
		if unsafeRune(r) {
			return fmt.Errorf("control character %U at byte %d", r, i)
		}
	}
	return nil
}

// CleanText returns s with what CheckText refuses replaced by U+FFFD, for text a sender puts
// together from parts it does not control.
func CleanText(s string) string {
	if CheckText(s) == nil {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unsafeRune(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || // C0, DEL, C1
		r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}
