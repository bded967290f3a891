package control

import (
	"errors"
	"fmt"
	"net/netip"
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
		if len(w.Tag) > MaxNameLen {
			return errors.New("welcome: tag too long")
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
		default:
			return fmt.Errorf("request: unknown op %q", r.Op)
		}
		if err := checkName("network", r.Network); err != nil {
			return err
		}
		if len(r.Password) > MaxPassword {
			return errors.New("request: password too long")
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
		if err := checkName("network", n); err != nil {
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
		if err := checkName("member name", m.Name); err != nil {
			return err
		}
		if len(m.Key) > MaxTarget || len(m.IPs) > MaxIPs {
			return errors.New("member: key or address list too long")
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
		if err := checkName("peer name", p.Name); err != nil {
			return err
		}
		if len(p.IPs) == 0 || len(p.IPs) > MaxIPs {
			return errors.New("peer: needs 1-4 IPs")
		}
		for _, ip := range p.IPs {
			if !ip.IsValid() || ip.Zone() != "" {
				return errors.New("peer: invalid IP")
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
		if len(p.Tag) > MaxNameLen {
			return errors.New("peer: tag too long")
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
		if err := checkName("acl network", acls[i].Network); err != nil {
			return err
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
