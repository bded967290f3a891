// Package operatorapi is the contract between a running warren-coord and its operator's commands
// (warren-coord nodes, networks, blocks, ...): the request and result types, the request decoder
// with its limits, and a client for the admin socket the server keeps in its data directory.
//
// The transport is HTTP over that unix socket (mode 0600, same uid only): every request is
// POST /v1/admin with a JSON Request body; the answer is a JSON Reply whose Result depends on the
// operation. The server side lives in package coord/operator, which also runs the same operations on
// the data directory directly when no server runs. Standard library only.
package operatorapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
	"unicode"
)

// SocketName is the file name of the admin socket inside the server's data directory.
const SocketName = "admin.sock"

// Path is the URL path of every request; Host is the only Host header the server accepts.
const (
	Path = "/v1/admin"
	Host = "admin.warren"
)

// Op names an operation. Listings are read-only; the others change state and are audited.
type Op string

// Operations.
const (
	OpNodes         Op = "nodes"          // → []Node
	OpNetworks      Op = "networks"       // → []Network
	OpAuthKeys      Op = "authkey.list"   // → []AuthKey
	OpBlocks        Op = "blocks"         // → Blocks
	OpAudit         Op = "audit"          // Since, Limit → []AuditEntry
	OpRelays        Op = "relays"         // → []Relay (needs a running server)
	OpAuthKeyCreate Op = "authkey.create" // Network, Reusable, Ephemeral, ExpirySeconds, Tag → NewAuthKey
	OpAuthKeyRevoke Op = "authkey.revoke" // ID → AuthKey
	OpBlockAdd      Op = "block.add"      // Prefix, Comment → BlockChange
	OpBlockRemove   Op = "block.remove"   // Prefix → BlockChange
	OpNodeRemove    Op = "node.remove"    // Node → RemovedNode
	// OpNetwork is an owner action the operator takes on any network: Action (see NetworkActions),
	// Network, and Node for the actions on a node → NetworkResult. It needs a running server (the
	// members must be told), and the server writes it to the audit log.
	OpNetwork Op = "network"
)

// NetworkActions are the actions OpNetwork takes, each mapped to whether it acts on a node.
var NetworkActions = map[string]bool{
	"kick": true, "ban": true, "unban": true, "approve": true, "deny": true, "transfer": true,
	"lock": false, "unlock": false, "delete": false,
}

// NetworkResult is what OpNetwork did.
type NetworkResult struct {
	Action  string `json:"action"`
	Network string `json:"network"`
	Node    string `json:"node,omitempty"` // the node acted on, by name
}

// knownOps is what DecodeRequest accepts.
var knownOps = map[Op]bool{OpNodes: true, OpNetworks: true, OpAuthKeys: true, OpBlocks: true, OpAudit: true, OpRelays: true,
	OpAuthKeyCreate: true, OpAuthKeyRevoke: true, OpBlockAdd: true, OpBlockRemove: true, OpNodeRemove: true,
	OpNetwork: true}

// Limits of a request.
const (
	MaxRequest   = 8 << 10 // bytes of JSON
	MaxField     = 256     // bytes of any string field
	MaxAuditRead = 100000  // entries per audit request
	maxExpiry    = 100 * 365 * 24 * 3600
)

// Request is one operation and its arguments; fields an operation does not use are ignored.
type Request struct {
	Op            Op     `json:"op"`
	Node          string `json:"node,omitempty"`    // a node's name, short key or fingerprint
	Network       string `json:"network,omitempty"` //
	Prefix        string `json:"prefix,omitempty"`  // a CIDR prefix or address
	Comment       string `json:"comment,omitempty"` // one line
	ID            string `json:"id,omitempty"`      // an auth key's ID
	Tag           string `json:"tag,omitempty"`
	Reusable      bool   `json:"reusable,omitempty"`
	Ephemeral     bool   `json:"ephemeral,omitempty"`
	ExpirySeconds int64  `json:"expiry_seconds,omitempty"` // 0 = never expires
	Action        string `json:"action,omitempty"`         // OpNetwork: one of NetworkActions
	Since         int64  `json:"since,omitempty"`          // unix seconds; 0 = any time
	Limit         int    `json:"limit,omitempty"`          // 0 = all (up to MaxAuditRead)
}

// Validate checks the limits every operation relies on: a known op, short strings without control
// characters (comments end up in the block list file, one line each), sane numbers.
func (r *Request) Validate() error {
	if !knownOps[r.Op] {
		return fmt.Errorf("unknown operation %q", r.Op)
	}
	for name, v := range map[string]string{"node": r.Node, "network": r.Network, "prefix": r.Prefix, "comment": r.Comment, "id": r.ID, "tag": r.Tag} {
		if len(v) > MaxField {
			return fmt.Errorf("%s: longer than %d bytes", name, MaxField)
		}
		if strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return fmt.Errorf("%s: control characters are not allowed", name)
		}
	}
	if r.ExpirySeconds < 0 || r.ExpirySeconds > maxExpiry {
		return fmt.Errorf("expiry: %d seconds out of range", r.ExpirySeconds)
	}
	if r.Since < 0 || r.Limit < 0 || r.Limit > MaxAuditRead {
		return errors.New("since and limit: out of range")
	}
	if r.Op == OpNetwork {
		onNode, ok := NetworkActions[r.Action]
		switch {
		case !ok:
			return fmt.Errorf("network action %.40q: want kick, ban, unban, approve, deny, transfer, lock, unlock or delete", r.Action)
		case r.Network == "":
			return errors.New("network action: no network")
		case onNode && r.Node == "":
			return fmt.Errorf("network %s: which node?", r.Action)
		case !onNode && r.Node != "":
			return fmt.Errorf("network %s takes no node", r.Action)
		}
	}
	return nil
}

// DecodeRequest reads one Request of at most MaxRequest bytes from r, refusing unknown fields and
// trailing data, and validates it.
func DecodeRequest(r io.Reader) (*Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxRequest+1))
	if err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	if len(data) > MaxRequest {
		return nil, fmt.Errorf("request larger than %d bytes", MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode request: trailing data")
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	return &req, nil
}

// Reply is the answer to a Request: Result on success, else Error (and Code).
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Code   Code            `json:"code,omitempty"`
}

// Code classifies a refused operation.
type Code string

// Codes.
const (
	CodeInvalid   Code = "invalid"   // a bad argument
	CodeNotFound  Code = "not_found" // no such node, key, network or entry
	CodeAmbiguous Code = "ambiguous" // a name that matches several nodes
	CodeForbidden Code = "forbidden" // a caller who is not the server's user
	CodeInternal  Code = "internal"
)

// Error is an operation refused with a reason for the operator.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Node is a node as 'warren-coord nodes' lists it.
type Node struct {
	Name        string       `json:"name"`
	Key         string       `json:"key"`         // short key, as in logs
	Fingerprint string       `json:"fingerprint"` // as 'warren status' shows it
	IPs         []netip.Addr `json:"ips"`
	// Online is null when no server runs (the listing came from the data directory).
	Online      *bool      `json:"online"`
	Observed    string     `json:"observed,omitempty"`     // where its control connection comes from, while online
	OnlineSince *time.Time `json:"online_since,omitempty"` // while online
	// LastSeen: now for an online node, else when it went offline or, if unknown, last logged in.
	LastSeen  time.Time `json:"last_seen"`
	Networks  []string  `json:"networks"`
	Ephemeral bool      `json:"ephemeral"`
	Tag       string    `json:"tag"`
	AuthKey   string    `json:"authkey"` // ID of the auth key it joined with
	CreatedAt time.Time `json:"created_at"`
}

// Network is a network as 'warren-coord networks' lists it.
type Network struct {
	Name      string `json:"name"`
	Owner     string `json:"owner"`      // short key
	OwnerName string `json:"owner_name"` // "" if the owner node was removed
	Members   int    `json:"members"`
	// Online counts members logged in; null when no server runs.
	Online    *int      `json:"online"`
	Password  bool      `json:"password"`
	CreatedAt time.Time `json:"created_at"`
}

// Relay is a relay nodes use: the coord's own, or a standalone one it announces (--relay).
type Relay struct {
	Kind string `json:"kind"` // "coord" or "standalone"
	Addr string `json:"addr"` // its UDP address
	Key  string `json:"key"`  // its key fingerprint
	// Nodes counts the nodes bound to it (its load); null for a standalone relay, whose load only
	// that relay knows.
	Nodes *int `json:"nodes"`
}

// AuthKey is an auth key (never the key itself). Absent times are null.
type AuthKey struct {
	ID         string     `json:"id"`
	Network    string     `json:"network"`
	State      string     `json:"state"` // valid, used, expired or revoked
	Reusable   bool       `json:"reusable"`
	Ephemeral  bool       `json:"ephemeral"`
	Tag        string     `json:"tag"`
	Uses       int64      `json:"uses"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// NewAuthKey is a created key with its secret, which is shown this once.
type NewAuthKey struct {
	AuthKey AuthKey `json:"authkey"`
	Secret  string  `json:"secret"`
}

// BlockEntry is one entry of the block list.
type BlockEntry struct {
	Prefix  string `json:"prefix"`
	Comment string `json:"comment"`
}

// Blocks is the block list and the file it lives in.
type Blocks struct {
	File    string       `json:"file"`
	Entries []BlockEntry `json:"entries"`
}

// BlockChange is the result of adding or removing a block.
type BlockChange struct {
	File    string `json:"file"`
	Prefix  string `json:"prefix"`  // as stored (masked)
	Changed bool   `json:"changed"` // false: it was already there
	// Applied: a running server has loaded the new list (else it reads it when it starts).
	Applied      bool     `json:"applied"`
	Disconnected []string `json:"disconnected"` // names of online nodes in the range, disconnected
}

// RemovedNode is the result of removing a node.
type RemovedNode struct {
	Node Node `json:"node"`
	// Live: a running server removed it, disconnected it if online and told its peers.
	Live      bool `json:"live"`
	WasOnline bool `json:"was_online"`
	PeersTold int  `json:"peers_told"`
}

// AuditEntry is one audited action.
type AuditEntry struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// ErrNotRunning is returned by Client.Do when no server answers on the socket.
var ErrNotRunning = errors.New("no warren-coord is running on this data directory")

// Client talks to the server whose data directory it was made for.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the server using dataDir.
func NewClient(dataDir string) *Client {
	sock := filepath.Join(dataDir, SocketName)
	return &Client{socket: sock, hc: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}}
}

// Running reports whether a server answers on the socket: false for no socket or a stale one.
func (c *Client) Running(ctx context.Context) (bool, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.socket)
	if err == nil {
		conn.Close()
		return true, nil
	}
	if noServer(err) {
		return false, nil
	}
	return false, fmt.Errorf("admin socket %s: %w", c.socket, err)
}

// noServer reports whether a dial error means nobody serves the socket: no socket file, or a stale one.
func noServer(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errRefused)
}

// MaxReply bounds the answer the client reads.
const MaxReply = 64 << 20

// Do performs req and decodes its result into out. A refusal comes back as *Error; no server
// listening (no socket, or a stale one) as ErrNotRunning.
func (c *Client) Do(ctx context.Context, req *Request, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+Host+Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(hreq)
	if err != nil {
		// No socket, or one nobody listens on (left by a server that crashed).
		if noServer(err) {
			return ErrNotRunning
		}
		return fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxReply+1))
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if len(data) > MaxReply {
		return fmt.Errorf("admin socket: answer larger than %d bytes", MaxReply)
	}
	var rep Reply
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("admin socket: %s: %w", resp.Status, err)
	}
	if rep.Error != "" || resp.StatusCode/100 != 2 {
		if rep.Error == "" {
			rep.Error = resp.Status
		}
		return &Error{Code: rep.Code, Message: rep.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rep.Result, out); err != nil {
		return fmt.Errorf("admin socket: result: %w", err)
	}
	return nil
}
