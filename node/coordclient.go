package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// ErrCoordKeyMismatch is returned when the coordination server presents a key other than the pinned one.
var ErrCoordKeyMismatch = errors.New("coordination server key does not match the pinned key")

// coordClient keeps the node's control connection: login, the peer map stream, and requests.
//
// It may know several servers (that share one database and key): it logs in to the current one,
// and when that one cannot be reached or is lost it moves on to the next, in order, wrapping
// around; the callers' back-off between tries is the jitter.
type coordClient struct {
	addrs   []string // at least one
	key     *identity.Key
	pinPath string
	log     hclog.Logger
	dial    func(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error)
	// loginMsg builds the Login message (endpoints may change between logins).
	loginMsg func() *control.Login
	// handle receives the Welcome (before the first peer map: it carries the node's tag, which the
	// access rules need) and every PeerMap and PeerDelta.
	handle func(*control.Msg)
	// onConnect, if set, is called after each successful login with the coord's address.
	onConnect func(w *control.Welcome, addr netip.AddrPort)

	nextID atomic.Uint64

	// mu guards the following.
	mu      sync.Mutex
	cur     int    // index in addrs of the server to log in to (or logged in to)
	pin     string // pinned fingerprint, "" until first use
	conn    *quic.Conn
	stream  *quic.Stream
	waiters map[uint64]chan *control.Reply
	sent    *control.Endpoints // the last endpoints report (sendEndpoints), for nudge
}

// loadPin returns the pinned coord fingerprint: the flag wins; else the saved pin; else "" (TOFU).
// A flag that disagrees with a saved pin is an error.
func loadPin(path, flag string) (string, error) {
	saved := ""
	if b, err := os.ReadFile(path); err == nil {
		saved = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read coord pin: %w", err)
	}
	if flag != "" {
		fp, err := identity.ParseFingerprint(flag)
		if err != nil {
			return "", err
		}
		if saved != "" && saved != fp {
			return "", fmt.Errorf("%w: --coord-key %s, but %s pins %s (delete that file to re-pin)", ErrCoordKeyMismatch, fp, path, saved)
		}
		return fp, nil
	}
	return saved, nil
}

// connect dials the coord, logs in and reads Welcome and the first peer map.
//
// A try that does not reach the server (rather than being refused by it) moves on to the next
// server for the next try.
func (c *coordClient) connect(ctx context.Context) (*control.Welcome, error) {
	c.mu.Lock()
	addr, pin := c.addrs[c.cur], c.pin
	c.mu.Unlock()
	w, err := c.connectTo(ctx, addr, pin)
	if err != nil && !errors.Is(err, ErrCoordKeyMismatch) && !isRefusal(err) {
		c.next(addr, err)
	}
	return w, err
}

// next moves on from the server at addr (if it is still the current one) to the next one.
func (c *coordClient) next(addr string, why error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs) < 2 || c.addrs[c.cur] != addr {
		return
	}
	c.cur = (c.cur + 1) % len(c.addrs)
	c.log.Info("moving on to the next coordination server", "from", addr, "to", c.addrs[c.cur], "reason", why)
}

// current returns the address of the server the node is logged in to, or tries next.
func (c *coordClient) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[c.cur]
}

func (c *coordClient) connectTo(ctx context.Context, addr, pin string) (*control.Welcome, error) {
	ap, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, err
	}
	var seen string
	tlsConf, err := identity.TLSConfig(c.key, control.ALPN, false, func(pub ed25519.PublicKey) error {
		seen = identity.Fingerprint(pub)
		if pin != "" && seen != pin {
			return fmt.Errorf("%w: pinned %s, server presented %s (if the server's key really changed, remove %s or pass the new --coord-key)",
				ErrCoordKeyMismatch, pin, seen, c.pinPath)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	idle, keepAlive := control.Timers(len(c.addrs))
	conn, err := c.dial(ctx, ap, tlsConf, &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       idle,
		KeepAlivePeriod:      keepAlive,
	})
	if err != nil {
		if pin != "" && seen != "" && seen != pin {
			return nil, fmt.Errorf("%w: pinned %s, server presented %s (if the server's key really changed, remove %s or pass the new --coord-key)",
				ErrCoordKeyMismatch, pin, seen, c.pinPath)
		}
		return nil, fmt.Errorf("connect to coordination server %s: %w", addr, err)
	}
	if pin == "" {
		if err := identity.WriteFileAtomic(c.pinPath, []byte(seen+"\n"), 0o600); err != nil {
			conn.CloseWithError(0, "")
			return nil, fmt.Errorf("save coord pin: %w", err)
		}
		c.log.Warn("trusting the coordination server's key on first use: nothing proved this is the right server, "+
			"and a password or auth key sent now would reach whoever answered; pin it with --coord HOST:PORT#KEY as warren-coord prints it",
			"key", seen, "pin_file", c.pinPath)
		c.mu.Lock()
		c.pin = seen
		c.mu.Unlock()
	}
	w, stream, err := c.doLogin(ctx, conn)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	c.mu.Lock()
	c.conn, c.stream = conn, stream
	c.waiters = make(map[uint64]chan *control.Reply)
	c.mu.Unlock()
	if c.onConnect != nil {
		c.onConnect(w, ap)
	}
	return w, nil
}

func (c *coordClient) doLogin(ctx context.Context, conn *quic.Conn) (*control.Welcome, *quic.Stream, error) {
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open control stream: %w", err)
	}
	if err := control.WriteMsg(stream, &control.Msg{Type: control.TypeLogin, Login: c.loginMsg()}); err != nil {
		return nil, nil, fmt.Errorf("send login: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		stream.SetReadDeadline(dl)
	}
	defer stream.SetReadDeadline(time.Time{})
	m, err := control.ReadMsg(stream)
	if err != nil {
		return nil, nil, fmt.Errorf("read login answer: %w", err)
	}
	switch m.Type {
	case control.TypeWelcome:
	case control.TypeReply:
		return nil, nil, fmt.Errorf("login refused: %w", m.Reply.Err())
	default:
		return nil, nil, fmt.Errorf("login: unexpected %q", m.Type)
	}
	pm, err := control.ReadMsg(stream)
	if err != nil {
		return nil, nil, fmt.Errorf("read peer map: %w", err)
	}
	if pm.Type != control.TypePeerMap {
		return nil, nil, fmt.Errorf("login: expected peer map, got %q", pm.Type)
	}
	if pm.PeerMap, err = control.ReadPeerMap(stream, pm.PeerMap); err != nil {
		return nil, nil, fmt.Errorf("read peer map: %w", err)
	}
	c.handle(m)
	c.handle(pm)
	return m.Welcome, stream, nil
}

// readLoop dispatches messages until the connection ends; it returns the reason.
func (c *coordClient) readLoop() error {
	c.mu.Lock()
	stream := c.stream
	c.mu.Unlock()
	for {
		m, err := control.ReadMsg(stream)
		if err != nil {
			c.failWaiters()
			return err
		}
		switch m.Type {
		case control.TypeReply:
			c.mu.Lock()
			ch := c.waiters[m.Reply.ID]
			delete(c.waiters, m.Reply.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.Reply
			}
		case control.TypePeerMap:
			if m.PeerMap, err = control.ReadPeerMap(stream, m.PeerMap); err != nil {
				c.failWaiters()
				return err
			}
			c.handle(m)
		case control.TypePeerDelta:
			c.handle(m)
		default:
			c.log.Warn("ignoring unexpected control message", "type", m.Type)
		}
	}
}

func (c *coordClient) failWaiters() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ch := range c.waiters {
		close(ch)
		delete(c.waiters, id)
	}
	c.conn, c.stream = nil, nil
}

// errCoordOffline is returned by requests while there is no control connection.
// requestLoginWait is how long a request waits for the control connection to come up.
const requestLoginWait = 5 * time.Second

var errCoordOffline = errors.New("not connected to the coordination server (retrying in the background); try again shortly")

// request sends r and waits for its reply.
func (c *coordClient) request(ctx context.Context, r control.Request) (*control.Reply, error) {
	r.ID = c.nextID.Add(1)
	ch := make(chan *control.Reply, 1)
	// A node that was just started, or is reconnecting, gets a few seconds to log in before the
	// request is refused: `warren up & warren network join` should simply work.
	wait, cancel := context.WithTimeout(ctx, requestLoginWait)
	defer cancel()
	for !c.connected() {
		select {
		case <-wait.Done():
			return nil, errCoordOffline
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.mu.Lock()
	if c.stream == nil {
		c.mu.Unlock()
		return nil, errCoordOffline
	}
	c.waiters[r.ID] = ch
	err := control.WriteMsg(c.stream, &control.Msg{Type: control.TypeRequest, Request: &r})
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return nil, errCoordOffline
		}
		return rep, rep.Err()
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, r.ID)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// sendEndpoints tells the coord about the node's local candidates and NAT mapping; best effort.
func (c *coordClient) sendEndpoints(u *control.Endpoints) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = u
	if c.stream != nil {
		control.WriteMsg(c.stream, &control.Msg{Type: control.TypeEndpoints, Endpoints: u})
	}
}

// nudge sends the last endpoints report again, unchanged, so that the coord hears from the node now
// rather than at its next keep-alive (every 22 s with one coord): when the node's NAT rebound, the
// coord's QUIC connection moves to the new address on this packet, and the coord tells the peers
// (coord/sidechannel.go, followAddrs). An unchanged report costs the coord nothing else. Nothing is
// sent before the first report. Best effort.
func (c *coordClient) nudge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream != nil && c.sent != nil {
		control.WriteMsg(c.stream, &control.Msg{Type: control.TypeEndpoints, Endpoints: c.sent})
	}
}

func (c *coordClient) close() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(0, "node shutting down")
	}
}

func (c *coordClient) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream != nil
}

func resolveUDP(ctx context.Context, hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: warren-coord's default one, 7400 (a bare "host", "[::1]" or "::1").
		lit := hostport
		if strings.HasPrefix(lit, "[") && strings.HasSuffix(lit, "]") {
			lit = lit[1 : len(lit)-1]
		}
		if a, perr := netip.ParseAddr(lit); perr == nil {
			return netip.AddrPortFrom(a.Unmap(), 7400), nil
		}
		if hostport == "" || strings.ContainsAny(hostport, ":[]") {
			return netip.AddrPort{}, fmt.Errorf("coordination server address %q: %w", hostport, err)
		}
		host, port = hostport, "7400"
	}
	ua, err := (&net.Resolver{}).LookupNetIP(ctx, "ip", host)
	if err != nil || len(ua) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve coordination server %q: %w", host, err)
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("coordination server port %q: %w", port, err)
	}
	return netip.AddrPortFrom(ua[0].Unmap(), uint16(p)), nil
}
