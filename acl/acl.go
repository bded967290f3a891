// Package acl reads and evaluates a network's access rules: which members, by name or tag, may reach
// which ports and protocols of which other members.
//
// A rule file is JSON:
//
//	{"rules": [
//	  {"from": ["tag:ci", "laptop"], "to": ["db"], "ports": ["5432/tcp", "8000-8100/tcp", "53/udp", "icmp"]},
//	  {"from": ["*"], "to": ["web"], "ports": ["443"]}
//	]}
//
// From and To name members: a node name, "tag:NAME" (nodes that joined with an auth key of that tag),
// "key:SHA256:..." (the node with that key fingerprint, as `warren network members` shows it) or "*"
// (everyone). Names are identities only as long as their node has them, so the coordination server
// binds each name to the key of the member that has it (when the rules are set, or when a member with
// that name first appears) and sends nodes the key form: a node that later takes a freed name does
// not inherit what was granted to it. Ports are "PORT", "LOW-HIGH" or "*", each optionally followed by "/tcp" or
// "/udp" (without it, both); "icmp" (echo requests, IPv4 and IPv6); or "*" alone (everything). A
// rule allows what it names and nothing else: with a rule list, anything no rule allows is refused.
// Rules never widen what a node exposes: a port must still be exposed by the receiving node.
//
// The package only parses (Parse, Compile) and answers questions (Policy.Grant, Grant.Allows); the
// coordination server stores and distributes rule lists, and each node enforces them on what it
// receives. Input is bounded: MaxFileSize bytes, control.MaxACLRules rules, control.MaxACLEntries
// entries per list.
package acl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/warren-net/warren/control"
)

// MaxFileSize bounds a rule file.
const MaxFileSize = 64 << 10

// Proto is an IP protocol a rule can allow.
type Proto uint8

// Protocols, by IP protocol number (ICMPv6 counts as ICMP).
const (
	ICMP Proto = 1
	TCP  Proto = 6
	UDP  Proto = 17
)

// File is a parsed rule file. Network, if set, names the network the file is meant for.
type File struct {
	Network string            `json:"network,omitempty"`
	Rules   []control.ACLRule `json:"rules"`
}

// Parse reads a rule file and checks every rule (see Compile). Errors name the rule and its line.
func Parse(b []byte) (*File, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("rule file is %d bytes, at most %d allowed", len(b), MaxFileSize)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, jsonError(b, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("rule file: unexpected data after the rules")
	}
	if len(f.Rules) == 0 {
		return nil, errors.New(`rule file has no rules ({"rules": [...]}); to go back to the default, clear the rules instead`)
	}
	if len(f.Rules) > control.MaxACLRules {
		return nil, fmt.Errorf("rule file has %d rules, at most %d allowed", len(f.Rules), control.MaxACLRules)
	}
	if _, err := Compile(f.Rules); err != nil {
		var re *RuleError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("rule %d (line %d): %w", re.Index+1, ruleLine(b, re.Index), re.Err)
		}
		return nil, err
	}
	return &f, nil
}

// jsonError adds the line number to a JSON syntax or type error.
func jsonError(b []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("rule file line %d: %w", lineAt(b, se.Offset), err)
	case errors.As(err, &te):
		return fmt.Errorf("rule file line %d: %s must be %s", lineAt(b, te.Offset), orValue(te.Field), te.Type)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("rule file line %d: the file ends in the middle of the JSON", lineAt(b, int64(len(b))))
	}
	return fmt.Errorf("rule file: %w", err)
}

func orValue(field string) string {
	if field == "" {
		return "the file"
	}
	return strconv.Quote(field)
}

func lineAt(b []byte, off int64) int {
	off = min(max(off, 0), int64(len(b)))
	return 1 + bytes.Count(b[:off], []byte("\n"))
}

// ruleLine returns the line on which rule i (0-based) of a valid JSON file starts, or 0 if unknown.
func ruleLine(b []byte, i int) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return 0
		}
		if key != "rules" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return 0
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return 0
		}
		for n := 0; dec.More(); n++ {
			off := dec.InputOffset()
			if n == i {
				// InputOffset points after the previous token: skip to the rule's '{'.
				for off < int64(len(b)) && strings.IndexByte(" \t\r\n,", b[off]) >= 0 {
					off++
				}
				return lineAt(b, off)
			}
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return 0
			}
		}
		return 0
	}
	return 0
}

// RuleError is a rule Compile refuses; Index is 0-based.
type RuleError struct {
	Index int
	Err   error
}

func (e *RuleError) Error() string { return fmt.Sprintf("rule %d: %v", e.Index+1, e.Err) }
func (e *RuleError) Unwrap() error { return e.Err }

// Member is a node as rules see it.
type Member struct {
	Name string // "" = none: matches no name (a name two peers claim is nobody's)
	Tag  string // "" = none
	Key  string // the key's fingerprint ("SHA256:..."); "" = unknown, matches no key
}

// Policy is a compiled rule list. The zero Policy allows nothing. It is immutable and safe for
// concurrent use.
type Policy struct {
	rules []rule
}

type rule struct {
	from, to []selector
	grant    Grant
}

type selector struct {
	any  bool
	tag  string // "tag:X" → X
	key  string // "key:SHA256:..." → "SHA256:..."
	name string
}

func (s selector) matches(m Member) bool {
	switch {
	case s.any:
		return true
	case s.tag != "":
		return m.Tag == s.tag
	case s.key != "":
		return m.Key == s.key
	}
	return m.Name != "" && m.Name == s.name
}

// KeyEntry is the From/To entry naming the node whose key has fingerprint fp.
func KeyEntry(fp string) string { return "key:" + fp }

// EntryName returns the node name a From/To entry is, if it is one (not "*", a tag or a key).
func EntryName(entry string) (string, bool) {
	if entry == "*" || strings.HasPrefix(entry, "tag:") || strings.HasPrefix(entry, "key:") {
		return "", false
	}
	return entry, true
}

// EntryKey returns the key fingerprint a From/To entry names, if it is a "key:" entry.
func EntryKey(entry string) (string, bool) { return strings.CutPrefix(entry, "key:") }

// validFingerprint reports whether s is "SHA256:" and 43 base64url characters (identity.Fingerprint).
func validFingerprint(s string) bool {
	b64, ok := strings.CutPrefix(s, "SHA256:")
	return ok && len(b64) == 43 &&
		strings.Trim(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

// Compile checks a rule list and compiles it. An empty list compiles to a Policy that allows
// nothing. Errors are *RuleError for a bad rule.
func Compile(rules []control.ACLRule) (*Policy, error) {
	if len(rules) > control.MaxACLRules {
		return nil, fmt.Errorf("%d rules, at most %d allowed", len(rules), control.MaxACLRules)
	}
	p := &Policy{rules: make([]rule, 0, len(rules))}
	for i, r := range rules {
		cr, err := compileRule(r)
		if err != nil {
			return nil, &RuleError{Index: i, Err: err}
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compileRule(r control.ACLRule) (rule, error) {
	var out rule
	var err error
	if out.from, err = selectors("from", r.From); err != nil {
		return out, err
	}
	if out.to, err = selectors("to", r.To); err != nil {
		return out, err
	}
	if err := checkList("ports", r.Ports); err != nil {
		return out, err
	}
	for _, s := range r.Ports {
		if err := out.grant.add(s); err != nil {
			return out, err
		}
	}
	out.grant.normalize()
	return out, nil
}

func checkList(what string, list []string) error {
	if len(list) == 0 {
		return fmt.Errorf("%q is missing or empty", what)
	}
	if len(list) > control.MaxACLEntries {
		return fmt.Errorf("%q has %d entries, at most %d allowed", what, len(list), control.MaxACLEntries)
	}
	return nil
}

func selectors(what string, list []string) ([]selector, error) {
	if err := checkList(what, list); err != nil {
		return nil, err
	}
	out := make([]selector, 0, len(list))
	for _, s := range list {
		fp, isKey := EntryKey(s)
		switch tag, isTag := strings.CutPrefix(s, "tag:"); {
		case s == "*":
			out = append(out, selector{any: true})
		case isKey:
			if !validFingerprint(fp) {
				return nil, fmt.Errorf("%s: bad key %q (want key:SHA256:<43 base64url characters>, as `warren network members` shows)", what, s)
			}
			out = append(out, selector{key: fp})
		case isTag:
			if !validLabel(tag) {
				return nil, fmt.Errorf("%s: bad tag %q (want tag:NAME, NAME 1-63 lower-case letters, digits and '-')", what, s)
			}
			out = append(out, selector{tag: tag})
		default:
			if !validLabel(s) {
				return nil, fmt.Errorf("%s: bad member %q (want a node name, tag:NAME, key:SHA256:... or *)", what, s)
			}
			out = append(out, selector{name: s})
		}
	}
	return out, nil
}

// validLabel reports whether s is a lower-case DNS label (node names and tags).
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Grant is what one member may reach on another: port ranges per protocol and ICMP echo. The zero
// Grant allows nothing.
type Grant struct {
	tcp, udp []portRange // sorted, disjoint
	icmp     bool
}

type portRange struct{ lo, hi uint16 }

// Allows reports whether the grant covers proto and port (ignored for ICMP).
func (g *Grant) Allows(proto Proto, port uint16) bool {
	var rs []portRange
	switch proto {
	case ICMP:
		return g.icmp
	case TCP:
		rs = g.tcp
	case UDP:
		rs = g.udp
	default:
		return false
	}
	for _, r := range rs {
		if port < r.lo {
			return false
		}
		if port <= r.hi {
			return true
		}
	}
	return false
}

// Empty reports whether the grant allows nothing.
func (g *Grant) Empty() bool { return !g.icmp && len(g.tcp) == 0 && len(g.udp) == 0 }

// Add widens g by o.
func (g *Grant) Add(o *Grant) {
	g.icmp = g.icmp || o.icmp
	g.tcp = append(g.tcp, o.tcp...)
	g.udp = append(g.udp, o.udp...)
	g.normalize()
}

// String lists the grant in rule-file syntax, e.g. "22/tcp 8000-8100/tcp icmp".
func (g *Grant) String() string {
	var parts []string
	for _, x := range []struct {
		rs    []portRange
		proto string
	}{{g.tcp, "tcp"}, {g.udp, "udp"}} {
		for _, r := range x.rs {
			switch {
			case r.lo == 1 && r.hi == 65535:
				parts = append(parts, "*/"+x.proto)
			case r.lo == r.hi:
				parts = append(parts, fmt.Sprintf("%d/%s", r.lo, x.proto))
			default:
				parts = append(parts, fmt.Sprintf("%d-%d/%s", r.lo, r.hi, x.proto))
			}
		}
	}
	if g.icmp {
		parts = append(parts, "icmp")
	}
	return strings.Join(parts, " ")
}

// add parses one ports entry into g.
func (g *Grant) add(s string) error {
	if s == "*" {
		g.icmp = true
		g.tcp = append(g.tcp, portRange{1, 65535})
		g.udp = append(g.udp, portRange{1, 65535})
		return nil
	}
	if s == "icmp" {
		g.icmp = true
		return nil
	}
	ports, proto, hasProto := strings.Cut(s, "/")
	tcp, udp := true, true
	if hasProto {
		switch proto {
		case "tcp":
			udp = false
		case "udp":
			tcp = false
		default:
			return fmt.Errorf("ports: bad protocol in %q (want tcp or udp)", s)
		}
	}
	r := portRange{1, 65535}
	if ports != "*" {
		lo, hi, isRange := strings.Cut(ports, "-")
		var err error
		if r.lo, err = parsePort(lo); err != nil {
			return fmt.Errorf("ports: %q: %w", s, err)
		}
		r.hi = r.lo
		if isRange {
			if r.hi, err = parsePort(hi); err != nil {
				return fmt.Errorf("ports: %q: %w", s, err)
			}
			if r.hi < r.lo {
				return fmt.Errorf("ports: %q: range ends before it starts", s)
			}
		}
	}
	if tcp {
		g.tcp = append(g.tcp, r)
	}
	if udp {
		g.udp = append(g.udp, r)
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a port (want 1-65535, a range LOW-HIGH, or *; then /tcp or /udp; or icmp)", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q out of range 1-65535", s)
	}
	return uint16(n), nil
}

// normalize sorts and merges the ranges, so Allows can stop early and sets stay small.
func (g *Grant) normalize() {
	g.tcp, g.udp = merge(g.tcp), merge(g.udp)
}

func merge(rs []portRange) []portRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b portRange) int { return int(a.lo) - int(b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if uint32(r.lo) <= uint32(last.hi)+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Matching appends to dst the indexes of the rules that let from reach to, and returns it.
func (p *Policy) Matching(dst []int, from, to Member) []int {
	for i := range p.rules {
		r := &p.rules[i]
		if anyMatch(r.from, from) && anyMatch(r.to, to) {
			dst = append(dst, i)
		}
	}
	return dst
}

// AddRule widens g by what rule i allows.
func (p *Policy) AddRule(g *Grant, i int) { g.Add(&p.rules[i].grant) }

// Grant returns what from may reach on to under the policy.
func (p *Policy) Grant(from, to Member) *Grant {
	g := &Grant{}
	for _, i := range p.Matching(nil, from, to) {
		p.AddRule(g, i)
	}
	return g
}

func anyMatch(sels []selector, m Member) bool {
	for _, s := range sels {
		if s.matches(m) {
			return true
		}
	}
	return false
}
