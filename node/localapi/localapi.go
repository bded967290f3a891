// Package localapi is the contract between a running node and its CLI: JSON types and a client for
// the HTTP API the node serves on a unix socket in its state directory. The server side lives in the
// node package. Standard library only.
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"time"
)

// SocketName is the file name of the API socket inside the state directory.
const SocketName = "warren.sock"

// Status is a node's view of itself and its peers.
type Status struct {
	Self  Self   `json:"self"`
	Coord Coord  `json:"coord"`
	Peers []Peer `json:"peers"`
	Stats Stats  `json:"stats"`
	// JoinRequests are the nodes waiting for this node's approval to join networks it owns, oldest
	// first, as the coord last said; JoinRequestsMore counts those beyond the list.
	JoinRequests     []JoinRequest `json:"join_requests"`
	JoinRequestsMore int           `json:"join_requests_more,omitempty"`
}

// JoinRequest is a node waiting to join a network this node owns ('warren network approve|deny').
type JoinRequest struct {
	Network     string    `json:"network"`
	Name        string    `json:"name"`
	Key         string    `json:"key"` // fingerprint
	RequestedAt time.Time `json:"requested_at"`
}

// Stats counts the node's overlay packets since it started.
type Stats struct {
	PacketsSent uint64 `json:"packets_sent"` // packets handed to peer links
	// DroppedQueueFull counts outbound packets dropped because their peer's send queue was full (in
	// packets, or in time at the link's rate): the traffic was faster than the link (its congestion
	// control, or a dead path) could carry.
	DroppedQueueFull   uint64 `json:"dropped_queue_full"`
	DroppedNoRoute     uint64 `json:"dropped_no_route"`     // outbound packets for no known peer, or with no link to it
	DroppedSpoofed     uint64 `json:"dropped_spoofed"`      // inbound packets from addresses the sending peer does not own
	DroppedRateLimited uint64 `json:"dropped_rate_limited"` // broadcast and multicast packets over a sender's rate
	// DroppedACL counts inbound connections, datagrams and echo requests the networks' access rules refused.
	DroppedACL uint64 `json:"dropped_acl"`
}

// Self describes the node itself.
type Self struct {
	Name     string       `json:"name"`
	IPs      []netip.Addr `json:"ips"`
	Networks []string     `json:"networks"`
	Key      string       `json:"key"`   // fingerprint of the node's identity key
	SOCKS    string       `json:"socks"` // SOCKS5 listen address, "" if disabled
	Endpoint string       `json:"endpoint"`
	NAT      *Netcheck    `json:"nat,omitempty"` // the last NAT discovery, if one ran
	// Ephemeral: the coord removes this node once it is offline (and at once when it logs out).
	Ephemeral bool `json:"ephemeral"`
	// Exposed lists the local services peers can reach, as `--expose` takes them ("tcp:8080+proxy").
	Exposed []string `json:"exposed"`
	// DNS are the node's DNS server addresses: they answer NAME.warren for apps on the TUN device
	// (--tun) and inside `warren run`.
	DNS []netip.Addr `json:"dns,omitempty"`
	// DNSSetup says how this host's resolver uses them in TUN mode: registered with
	// systemd-resolved for the warren domain, or the line a user adds; "" without --tun.
	DNSSetup string `json:"dns_setup,omitempty"`
}

// Netcheck is what NAT discovery found (GET /v1/netcheck runs a fresh one).
type Netcheck struct {
	UDP     bool   `json:"udp"`     // the coord answered over UDP
	Public  string `json:"public"`  // the node's address as the coord sees it
	Mapping string `json:"mapping"` // "endpoint-independent", "endpoint-dependent" (symmetric) or "unknown"
	// Allocation is how an endpoint-dependent NAT picks its ports: "sequential" (peers predict the
	// next ones: PortDelta between mappings, LastPort the last one seen) or "random"; "" if not measured.
	Allocation string  `json:"allocation,omitempty"`
	PortDelta  int     `json:"port_delta,omitempty"`
	LastPort   uint16  `json:"last_port,omitempty"`
	Hairpin    bool    `json:"hairpin"` // a packet to the own public address comes back
	CoordRTTms float64 `json:"coord_rtt_ms"`
	// Relay is the relay in use: the best one the node is logged in to (standalone relays in the
	// announced order, the coord's last), where relayed links start; "" if none. A link stays on
	// another relay its peer shares while this one does not reach the peer.
	Relay      string  `json:"relay"`
	RelayRTTms float64 `json:"relay_rtt_ms"`
	// CoordTransport and RelayTransport say how the node reaches the coord and the relay in use:
	// "udp", or "tcp" (the TCP fallback where UDP gets no answer).
	CoordTransport string `json:"coord_transport"`
	RelayTransport string `json:"relay_transport,omitempty"`
	// Relays are the standalone relays the coord announces, each measured; the node logs in to all.
	Relays []RelayCheck `json:"relays,omitempty"`
	// Portmap is the home router's mapping of the node's UDP port, a candidate endpoint for peers:
	// "PROTOCOL EXTERNAL" ("pcp 203.0.113.5:41641", "nat-pmp ..." or "upnp ..."), "none" (the router did not map
	// it, or not yet), or "off" (--no-portmap, --no-direct, a loopback socket, no default gateway).
	Portmap string `json:"portmap"`
}

// RelayCheck is the round trip to one standalone relay.
type RelayCheck struct {
	Addr  string  `json:"addr"`
	OK    bool    `json:"ok"` // it answered
	RTTms float64 `json:"rtt_ms"`
	InUse bool    `json:"in_use"` // it is the relay in use (Netcheck.Relay)
	// Transport is "udp" or "tcp" (the TCP fallback).
	Transport string `json:"transport"`
	// Login is the state of the node's login to it: "logged in", "logging in", "refused: REASON"
	// (the relay's operator blocked the node's address, a rate limit, the relay is full) or
	// "not logged in: ERROR"; "" = the node does not log in to it.
	Login string `json:"login,omitempty"`
}

// Coord describes the control connection.
type Coord struct {
	Addr string `json:"addr"` // the server the node is logged in to, or tries next
	// Servers lists every server the node fails over between, in order, when it knows several.
	Servers   []string `json:"servers,omitempty"`
	Key       string   `json:"key"`       // pinned fingerprint
	Connected bool     `json:"connected"` //
	// Transport is how the control connection goes: "udp", or "tcp" (the TCP fallback where UDP
	// gets no answer; README "Networks that block UDP").
	Transport string `json:"transport"`
	// Trouble is why the last login failed ("" once one worked): the coord's reason for a refusal
	// (e.g. its storage is full) or why it could not be reached. The node keeps retrying.
	Trouble string `json:"trouble,omitempty"`
}

// Peer describes one visible peer and the link to it.
type Peer struct {
	Name   string       `json:"name"`
	IPs    []netip.Addr `json:"ips"`
	Online bool         `json:"online"` // logged in at the coord
	// State sums up Online and Path: "online", "offline", or "control offline, tunnel up" when the
	// coord reports the peer gone but the tunnel to it still answers its liveness checks.
	State    string   `json:"state"`
	Path     string   `json:"path"` // "direct", "relay", "relay-tcp" (a relay reached over TCP), "idle" (wound down after --link-idle without traffic: the next packet brings it back) or "none"
	Endpoint string   `json:"endpoint"`
	RTTms    float64  `json:"rtt_ms"`
	Networks []string `json:"networks"`
}

// NetworkRequest asks the node to create, join or leave a network.
type NetworkRequest struct {
	Op       string `json:"op"` // "create", "join" or "leave"
	Name     string `json:"name"`
	Password string `json:"password,omitempty"`
	Approval bool   `json:"approval,omitempty"` // create: joins need the owner's approval
	// Open (create): the network takes anyone without a password or approval. A network needs a
	// password, approval or Open: the coord refuses one with none of them.
	Open bool `json:"open,omitempty"`
}

// OwnerRequest asks the node to perform an owner action on a network, or list it (POST
// /v1/network/owner). Op is one of approve, deny, kick, ban, unban (with Target), lock, unlock,
// password (with Password), approval (with Approval), transfer (with Target), delete, members,
// pending.
type OwnerRequest struct {
	Op       string `json:"op"`
	Network  string `json:"network"`
	Target   string `json:"target,omitempty"` // a node name, or key fingerprint
	Password string `json:"password,omitempty"`
	Approval bool   `json:"approval,omitempty"`
	// Open (password without one, approval off): the network is to take anyone; needed to take
	// away the last of a password and approval.
	Open bool `json:"open,omitempty"`
	// All (deny, without Target): drop every pending join; the reply lists them.
	All bool `json:"all,omitempty"`
}

// OwnerReply answers an OwnerRequest.
type OwnerReply struct {
	Networks []string `json:"networks"`          // this node's networks afterwards
	Members  []Member `json:"members,omitempty"` // members and pending
}

// Member is one entry of a network's roster.
type Member struct {
	Name   string       `json:"name"`
	Key    string       `json:"key"` // fingerprint
	IPs    []netip.Addr `json:"ips"`
	Online bool         `json:"online"`
	Owner  bool         `json:"owner"`
	State  string       `json:"state"` // "member", "pending" or "banned"
}

// NetworkReply answers a NetworkRequest.
type NetworkReply struct {
	Networks []string `json:"networks"`
}

// ACLRule is one access rule, as in a rule file (see package acl).
type ACLRule struct {
	From  []string `json:"from"`
	To    []string `json:"to"`
	Ports []string `json:"ports"`
}

// ACLRequest sets ("set", with Rules), clears ("clear") or reads ("show") a network's access rules.
type ACLRequest struct {
	Op      string    `json:"op"`
	Network string    `json:"network"`
	Rules   []ACLRule `json:"rules,omitempty"`
}

// RenameRequest asks for a new node name (POST /v1/rename).
type RenameRequest struct {
	Name string `json:"name"`
}

// Rename is the node's name after POST /v1/rename.
type Rename struct {
	Name string `json:"name"`
}

// ACL is a network's access rules; no rules means the default (members reach exposed ports). It is
// also a valid rule file when it has rules.
type ACL struct {
	Network string    `json:"network"`
	Rules   []ACLRule `json:"rules"`
}

// PingReply is the answer to one echo request.
type PingReply struct {
	Target string     `json:"target"` // as asked
	Name   string     `json:"name"`   // peer name, if the address is a peer's
	IP     netip.Addr `json:"ip"`
	RTTms  float64    `json:"rtt_ms"`
	Path   string     `json:"path"` // "direct", "relay" or "none"
}

// DownReply answers a request to stop the node (POST /v1/down).
type DownReply struct {
	LoggedOut bool   `json:"logged_out"`      // an ephemeral node was removed at the coord
	Error     string `json:"error,omitempty"` // why the logout failed; the node stops anyway
}

// ErrorReply is the body of every non-2xx answer.
type ErrorReply struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Error is a failed request; Code is the coordination server's error code, if it answered (e.g.
// "pending", "not_owner", "banned").
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// ErrNotRunning is returned when no node answers on the state directory's socket.
var ErrNotRunning = errors.New("no node is running with this state directory (start one with 'warren up')")

// Client talks to the node whose state directory it was made for.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the node using stateDir.
func NewClient(stateDir string) *Client {
	sock := filepath.Join(stateDir, SocketName)
	return &Client{socket: sock, hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}}
}

// Status fetches the node's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Network performs a network operation through the node.
func (c *Client) Network(ctx context.Context, req NetworkRequest) (*NetworkReply, error) {
	var rep NetworkReply
	return &rep, c.do(ctx, http.MethodPost, "/v1/network", req, &rep)
}

// Owner performs an owner action or listing through the node.
func (c *Client) Owner(ctx context.Context, req OwnerRequest) (*OwnerReply, error) {
	var rep OwnerReply
	return &rep, c.do(ctx, http.MethodPost, "/v1/network/owner", req, &rep)
}

// ACL performs an access-rules operation through the node.
func (c *Client) ACL(ctx context.Context, req ACLRequest) (*ACL, error) {
	var rep ACL
	return &rep, c.do(ctx, http.MethodPost, "/v1/acl", req, &rep)
}

// Rename asks the coordination server to rename this node: names are unique among the nodes that
// share a network, so a name another node there has is refused.
func (c *Client) Rename(ctx context.Context, name string) (*Rename, error) {
	var rep Rename
	return &rep, c.do(ctx, http.MethodPost, "/v1/rename", RenameRequest{Name: name}, &rep)
}

// Ping sends one ICMP echo request through the overlay to target (a peer name or virtual IP).
func (c *Client) Ping(ctx context.Context, target string, seq uint16, timeout time.Duration) (*PingReply, error) {
	var rep PingReply
	q := url.Values{"target": {target}, "seq": {strconv.Itoa(int(seq))}, "timeout": {timeout.String()}}
	return &rep, c.do(ctx, http.MethodGet, "/v1/ping?"+q.Encode(), nil, &rep)
}

// Whois names the peer behind a local connection the node made to an exposed service; addr is the
// client address the service saw (ADDR:PORT).
func (c *Client) Whois(ctx context.Context, addr string) (*Whois, error) {
	var rep Whois
	return &rep, c.do(ctx, http.MethodGet, "/v1/whois?"+url.Values{"addr": {addr}}.Encode(), nil, &rep)
}

// Netcheck runs NAT discovery on the node's socket.
func (c *Client) Netcheck(ctx context.Context) (*Netcheck, error) {
	var rep Netcheck
	return &rep, c.do(ctx, http.MethodGet, "/v1/netcheck", nil, &rep)
}

// Down asks the node to log out (if it is ephemeral) and stop.
func (c *Client) Down(ctx context.Context) (*DownReply, error) {
	var rep DownReply
	return &rep, c.do(ctx, http.MethodPost, "/v1/down", struct{}{}, &rep)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	// The host is fixed: the node refuses any other Host header (no DNS rebinding via a browser).
	req, err := http.NewRequestWithContext(ctx, method, "http://local.warren"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return ErrNotRunning
		}
		return fmt.Errorf("local API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorReply
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &Error{Code: e.Code, Message: e.Error}
		}
		return fmt.Errorf("local API: %s", resp.Status)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// Metrics returns the node's Prometheus metrics in the text exposition format (GET /v1/metrics,
// `warren metrics`).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, http.MethodGet, "/v1/metrics", nil, &b)
}

// Whois names the peer behind a local connection the node made to an exposed service
// (GET /v1/whois?addr=ADDR:PORT, `warren whois`).
type Whois struct {
	Addr     string       `json:"addr"`           // the address the service saw as its client's
	Name     string       `json:"name"`           // the peer's name
	Key      string       `json:"key"`            // the peer's key fingerprint
	IPs      []netip.Addr `json:"ips"`            // the peer's overlay addresses
	Networks []string     `json:"networks"`       // networks shared with the peer
	Source   string       `json:"source"`         // the peer's overlay address and port on this connection (port 0: not known)
	Port     uint16       `json:"port,omitempty"` // the exposed port it connected to
}
