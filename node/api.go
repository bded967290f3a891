package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"

	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// apiServer serves the local API on a unix socket in the state directory (mode 0600: only the node's
// user can talk to it).
type apiServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
	done chan struct{}
}

func startAPI(n *Node, path string, log hclog.Logger) (*apiServer, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another node is already running with state dir %s", n.cfg.StateDir)
	}
	os.Remove(path) // a stale socket from a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("local API socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("POST /v1/network", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.NetworkRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "bad request: " + err.Error()})
			return
		}
		nets, err := n.network(r.Context(), req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, localapi.NetworkReply{Networks: nets})
	})
	mux.HandleFunc("POST /v1/network/owner", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.OwnerRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "bad request: " + err.Error()})
			return
		}
		rep, err := n.Owner(r.Context(), req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/acl", n.handleACLAPI)
	mux.HandleFunc("POST /v1/rename", n.handleRenameAPI)
	mux.HandleFunc("GET /v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		rep, err := n.Netcheck(r.Context())
		if err != nil && !errors.Is(err, peer.ErrNoUDP) {
			writeJSON(w, http.StatusServiceUnavailable, localapi.ErrorReply{Error: err.Error()})
			return
		}
		v := netcheckView(rep, n.relays.logins(), n.coordTransport(), n.transport)
		v.Portmap = n.portmapStatus()
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("POST /v1/down", n.handleDown)
	mux.HandleFunc("GET /v1/whois", func(w http.ResponseWriter, r *http.Request) {
		addr, err := netip.ParseAddrPort(r.URL.Query().Get("addr"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: fmt.Sprintf("whois: want addr=ADDR:PORT: %v", err)})
			return
		}
		rep, ok := n.Whois(addr)
		if !ok {
			writeJSON(w, http.StatusNotFound, localapi.ErrorReply{Error: fmt.Sprintf("whois: %v is not a connection from a peer", addr)})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/attach", n.handleAttach)   // `warren run` (attach.go)
	mux.Handle("GET /v1/metrics", n.registry.Handler()) // Prometheus text format (metrics.go)
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		seq, _ := strconv.Atoi(q.Get("seq"))
		timeout, err := time.ParseDuration(q.Get("timeout"))
		if err != nil || timeout <= 0 || timeout > time.Minute {
			timeout = 2 * time.Second
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		rep, err := n.Ping(ctx, q.Get("target"), uint16(seq))
		if err != nil {
			writeJSON(w, http.StatusGatewayTimeout, localapi.ErrorReply{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	a := &apiServer{ln: ln, path: path, done: make(chan struct{}),
		srv: &http.Server{Handler: hostCheck(mux), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.StandardLogger(nil),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}}
	go func() {
		defer close(a.done)
		a.srv.Serve(ln)
	}()
	return a, nil
}

// hostCheck refuses requests whose Host is not the fixed local name, so a web page cannot reach the
// API through DNS rebinding even if the socket were ever bridged to TCP.
func hostCheck(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "local.warren" {
			writeJSON(w, http.StatusForbidden, localapi.ErrorReply{Error: "forbidden host"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// writeError answers a failed network request, with the coord's error code if it has one.
func writeError(w http.ResponseWriter, err error) {
	rep := localapi.ErrorReply{Error: err.Error()}
	var cerr *control.Error
	if errors.As(err, &cerr) {
		rep.Code = string(cerr.Code)
	}
	writeJSON(w, http.StatusConflict, rep)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (a *apiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
	<-a.done
	os.Remove(a.path)
}

// Network creates, joins or leaves a network through the coordination server.
func (n *Node) Network(ctx context.Context, op, name, password string) ([]string, error) {
	return n.network(ctx, localapi.NetworkRequest{Op: op, Name: name, Password: password})
}

func (n *Node) network(ctx context.Context, req localapi.NetworkRequest) ([]string, error) {
	op, name, password := req.Op, req.Name, req.Password
	var o control.Op
	switch op {
	case "create":
		o = control.OpCreate
	case "join":
		o = control.OpJoin
	case "leave":
		o = control.OpLeave
	default:
		return nil, fmt.Errorf("unknown network operation %q (want create, join or leave)", op)
	}
	if n.coord == nil {
		return nil, errCoordOffline
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rep, err := n.coord.request(ctx, control.Request{Op: o, Network: name, Password: password, Approval: req.Approval && o == control.OpCreate,
		Open: req.Open && o == control.OpCreate})
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.setNetworksLocked(rep.Networks)
	n.mu.Unlock()
	return rep.Networks, nil
}

// Owner performs an owner action or listing on a network through the coordination server (see
// localapi.OwnerRequest).
func (n *Node) Owner(ctx context.Context, req localapi.OwnerRequest) (*localapi.OwnerReply, error) {
	op := control.Op(req.Op)
	if !op.IsOwnerAction() {
		return nil, fmt.Errorf("unknown network operation %q (want approve, deny, kick, ban, unban, lock, unlock, password, approval, transfer, delete, members or pending)", req.Op)
	}
	if r := (control.Request{Op: op, Target: req.Target, All: req.All}); !r.TargetOK() {
		switch {
		case req.All && op != control.OpDeny:
			return nil, fmt.Errorf("%s: all applies to deny only", op)
		case req.All:
			return nil, fmt.Errorf("%s all: name no node", op)
		case req.Target == "":
			return nil, fmt.Errorf("%s: name the node (its name or key fingerprint)", op)
		}
		return nil, fmt.Errorf("%s takes no node", op)
	}
	if n.coord == nil {
		return nil, errCoordOffline
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r := control.Request{Op: op, Network: req.Network, Target: req.Target, Approval: req.Approval, Open: req.Open, All: req.All}
	if op == control.OpPassword {
		r.Password = req.Password
	}
	rep, err := n.coord.request(ctx, r)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.setNetworksLocked(rep.Networks)
	n.mu.Unlock()
	out := &localapi.OwnerReply{Networks: rep.Networks, Members: make([]localapi.Member, 0, len(rep.Members))}
	for _, m := range rep.Members {
		out.Members = append(out.Members, localapi.Member{Name: m.Name, Key: m.Key, IPs: m.IPs, Online: m.Online, Owner: m.Owner, State: m.State})
	}
	return out, nil
}

// Ping sends one ICMP echo request through both netstacks to target (a peer name or virtual IP).
func (n *Node) Ping(ctx context.Context, target string, seq uint16) (*localapi.PingReply, error) {
	stack := n.stack.Load()
	if stack == nil {
		return nil, errClosed
	}
	ip, err := n.resolvePeer(ctx, target)
	if err != nil {
		return nil, err
	}
	if !n.inOverlay(ip) {
		return nil, fmt.Errorf("%v is not an overlay address", ip)
	}
	rep := &localapi.PingReply{Target: target, IP: ip, Path: "none"}
	if k, ok := n.routes.Load().owner[ip]; ok {
		rep.Path = n.ep.Status(k).Path
		rep.Name = n.peers.name(k)
	}
	rtt, err := stack.Ping(ctx, ip, seq)
	if err != nil {
		return nil, err
	}
	rep.RTTms = float64(rtt.Microseconds()) / 1000
	return rep, nil
}

// Status reports the node and its peers. The local API serves it while Start runs: the parts Start
// sets after the API is up (peer endpoint, coord client, proxy) are read only once it has finished
// (n.started), so a status request then shows them empty instead of racing their assignment.
func (n *Node) Status() localapi.Status {
	st := localapi.Status{Self: localapi.Self{Name: n.peers.selfName(), Networks: []string{}}, Peers: []localapi.Peer{}}
	st.Self.Exposed = n.exposedList()
	if n.key != nil { // set before the API starts
		st.Self.Key = n.key.Fingerprint()
	}
	st.Coord.Addr = n.cfg.Coord
	if all := strings.Split(n.cfg.Coord, ","); len(all) > 1 {
		st.Coord.Addr, st.Coord.Servers = all[0], all
	}
	if n.started.Load() {
		if a := n.SOCKSAddr(); a != nil {
			st.Self.SOCKS = a.String()
		}
		if n.ep != nil { // nil in tests that set parts by hand
			st.Self.Endpoint = n.ep.LocalAddr().String()
		}
		if n.coord != nil {
			st.Coord.Addr, st.Coord.Connected = n.coord.current(), n.coord.connected()
			n.coord.mu.Lock()
			st.Coord.Key = n.coord.pin
			n.coord.mu.Unlock()
		}
	}
	logins := n.relays.logins()
	n.mu.Lock()
	st.Coord.Trouble = n.coordTrouble
	if n.started.Load() {
		st.Coord.Transport = n.transport(n.coordAddr)
	}
	if w := n.welcome; w != nil {
		st.Self.IPs = []netip.Addr{w.IPv4, w.IPv6}
		st.Self.Ephemeral = w.Ephemeral
		st.Self.Networks = append(st.Self.Networks, w.Networks...)
		if d4, d6 := dnsAddrs(w.Prefix4, w.Prefix6); d4.IsValid() && d6.IsValid() {
			st.Self.DNS = []netip.Addr{d4, d6}
		}
	}
	st.Self.DNSSetup = n.dnsSetup
	if n.nat != nil {
		v := netcheckView(*n.nat, logins, n.transport(n.coordAddr), n.transport)
		v.Portmap = n.portmapStatus()
		st.Self.NAT = &v
	}
	n.mu.Unlock()
	for _, p := range n.peers.sorted() {
		ls := n.linkStatus(p)
		ps := localapi.Peer{Name: p.Name, IPs: p.IPs, Online: p.Online, Path: ls.Path, Networks: p.Networks}
		if ls.Endpoint.IsValid() {
			ps.Endpoint = ls.Endpoint.String()
		}
		ps.RTTms = float64(ls.RTT.Microseconds()) / 1000
		switch {
		case p.Online:
			ps.State = "online"
		case ps.Path != peer.PathNone && ps.Path != peer.PathIdle:
			ps.State = "control offline, tunnel up"
		default:
			ps.State = "offline"
		}
		st.Peers = append(st.Peers, ps)
	}
	st.JoinRequests, st.JoinRequestsMore = n.joins.status()
	st.Stats = n.stats()
	return st
}

// setNetworksLocked records the node's network list. The welcome is copied, not modified in place,
// because saveCache and status readers hold on to it outside the lock. n.mu must be held.
func (n *Node) setNetworksLocked(networks []string) {
	if n.welcome == nil {
		return
	}
	w := *n.welcome
	w.Networks = append([]string(nil), networks...)
	n.welcome = &w
}
