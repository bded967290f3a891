package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/backoff"
)

// relayClient keeps the node logged in to one standalone relay that the coord announced: a QUIC
// connection from the node's one UDP socket (so the relay knows which address speaks for the node's
// key) carrying the node's consent list, its current peer keys, resent whenever the peer map changes.
// It reconnects with backoff and does not depend on the coord: relayed links keep working while the
// coord is down. The connection's keep-alives also keep the NAT mapping towards the relay open, and
// quic-go migrates it when the NAT rebinds; the relay follows (coord/relay.Server).
type relayClient struct {
	info control.Relay
	key  *identity.Key
	log  hclog.Logger
	dial func(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error)
	// consent returns the keys of the peers the node wants to reach through the relay.
	consent func() [][]byte
	// onLogin is called after each successful login, onLogout when that login ends (the relay no
	// longer forwards to the node): the node tells its peer links which relays it is logged in to.
	onLogin, onLogout func()
	wake              chan struct{} // the consent list changed
	cancel            context.CancelFunc
	up                atomic.Bool // logged in now

	// mu guards the following.
	mu    sync.Mutex
	state string // the login's state for the user: "logged in", or why not (run)
}

// Login states shown to the user (netcheck).
const (
	loginConnecting = "logging in"
	loginUp         = "logged in"
)

func (r *relayClient) setState(s string) {
	r.mu.Lock()
	r.state = s
	r.mu.Unlock()
}

// loginState returns the login's state for the user.
func (r *relayClient) loginState() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == "" {
		return loginConnecting
	}
	return r.state
}

// relayRefusal returns the relay's reason if err is the relay refusing or ending the login on
// purpose (a control.RelayClose code other than OK: blocked, rate limited, full, ...).
func relayRefusal(err error) (string, bool) {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode != control.RelayCloseOK {
		return ae.ErrorMessage, true
	}
	return "", false
}

// relayWriteTimeout bounds one consent list write; a relay that does not read is dropped.
const relayWriteTimeout = 10 * time.Second

// run keeps the login up until ctx ends.
func (r *relayClient) run(ctx context.Context) {
	bo := backoff.New(500*time.Millisecond, 15*time.Second)
	last := "" // the last failure logged: each new one is logged once
	for ctx.Err() == nil {
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		reason, refused := relayRefusal(err)
		state := "not logged in: " + err.Error()
		if refused {
			state = "refused: " + reason
		}
		if state != last || r.up.Load() {
			if refused {
				r.log.Warn("the relay refused the login; retrying in the background", "relay", r.info.Addr, "reason", reason)
			} else {
				r.log.Warn("relay connection lost or refused; retrying in the background", "relay", r.info.Addr, "error", err)
			}
			last = state
		}
		r.setState(state)
		if r.up.Swap(false) {
			r.onLogout()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(bo.Next()):
		}
	}
}

// session logs in once and sends consent updates until the connection or ctx ends.
func (r *relayClient) session(ctx context.Context) error {
	tlsConf, err := identity.TLSConfig(r.key, control.RelayALPN, false, func(pub ed25519.PublicKey) error {
		if fp := identity.Fingerprint(pub); fp != r.info.Key {
			return fmt.Errorf("relay %s presented key %s, the coordination server announced %s", r.info.Addr, fp, r.info.Key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := r.dial(dctx, r.info.Addr, tlsConf, &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       8 * time.Second,
		KeepAlivePeriod:      2 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("connect to relay: %w", err)
	}
	defer conn.CloseWithError(0, "")
	stream, err := conn.OpenStreamSync(dctx)
	if err != nil {
		return fmt.Errorf("open relay login stream: %w", err)
	}
	if err := r.sendConsent(stream); err != nil {
		return err
	}
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ok [1]byte
	if _, err := io.ReadFull(stream, ok[:]); err != nil || ok[0] != control.RelayLoginOK {
		if _, refused := relayRefusal(err); refused {
			return err
		}
		return fmt.Errorf("relay login not accepted: %w", errOr(err, "unexpected answer"))
	}
	r.up.Store(true)
	r.setState(loginUp)
	r.log.Info("logged in to the relay", "relay", r.info.Addr)
	r.onLogin()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Context().Done():
			return context.Cause(conn.Context())
		case <-r.wake:
			if err := r.sendConsent(stream); err != nil {
				return err
			}
		}
	}
}

func (r *relayClient) sendConsent(stream *quic.Stream) error {
	b, err := control.AppendRelayConsent(nil, r.consent())
	if err != nil {
		return fmt.Errorf("relay consent list: %w", err)
	}
	stream.SetWriteDeadline(time.Now().Add(relayWriteTimeout))
	if _, err := stream.Write(b); err != nil {
		return fmt.Errorf("send relay consent list: %w", err)
	}
	return nil
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// useRelays applies the relays the coord announced in w. The node logs in to every announced
// relay (a relayClient each, in the announced order, duplicates once) and keeps the logins it already
// has; the coord's own relay at coordAddr, if the coord offers one, comes last: the last resort. An
// invalid coordAddr (the coord is not connected) leaves the coord's relay out. Which of the relays a
// peer link uses is the peer package's choice among those the node is logged in to
// (peer/relaypath.go): peers that fail over to another relay find each other there.
func (n *Node) useRelays(w *control.Welcome, coordAddr netip.AddrPort) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.relays = w.Relays
	old := make(map[control.Relay]*relayClient, len(n.relayClients))
	for _, rc := range n.relayClients {
		old[rc.info] = rc
	}
	clients := make([]*relayClient, 0, len(w.Relays))
	seen := make(map[netip.AddrPort]bool)
	for _, info := range w.Relays {
		if seen[info.Addr] {
			continue // two logins from one socket to one relay would replace each other
		}
		seen[info.Addr] = true
		rc := old[info]
		if rc == nil {
			rc = n.startRelayLocked(info)
		}
		delete(old, info)
		clients = append(clients, rc)
	}
	for _, rc := range old {
		rc.cancel()
	}
	n.relayClients = clients
	n.coordRelay = netip.AddrPort{}
	if w.Relay {
		n.coordRelay = coordAddr
	}
	n.mu.Unlock()
	n.applyRelays()
}

// coordLost takes the coord's relay out of use: the coord forgets a node's relay binding with its
// control connection.
func (n *Node) coordLost() {
	n.mu.Lock()
	n.coordRelay = netip.AddrPort{}
	n.mu.Unlock()
	n.applyRelays()
}

// applyRelays tells the peer links which relays the node is logged in to now: the announced ones
// whose login is up, in the announced order, then the coord's.
func (n *Node) applyRelays() {
	n.relayMu.Lock() // one at a time, so the last state wins
	defer n.relayMu.Unlock()
	n.mu.Lock()
	use := make([]netip.AddrPort, 0, len(n.relayClients)+1)
	for _, rc := range n.relayClients {
		if rc.up.Load() {
			use = append(use, rc.info.Addr)
		}
	}
	if n.coordRelay.IsValid() {
		use = append(use, n.coordRelay)
	}
	n.mu.Unlock()
	n.ep.SetRelays(use)
}

func (n *Node) startRelayLocked(info control.Relay) *relayClient {
	ctx, cancel := context.WithCancel(n.ctx)
	rc := &relayClient{info: info, key: n.key, log: n.log.Named("relay"), dial: n.ep.DialControl,
		consent: n.peerKeys, wake: make(chan struct{}, 1), cancel: cancel,
		onLogin: n.applyRelays, onLogout: n.applyRelays}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		rc.run(ctx)
	}()
	return rc
}

// relayLogins returns the state of the node's relay logins by relay address.
func (n *Node) relayLogins() map[netip.AddrPort]string {
	n.mu.Lock()
	clients := n.relayClients
	n.mu.Unlock()
	out := make(map[netip.AddrPort]string, len(clients))
	for _, rc := range clients {
		out[rc.info.Addr] = rc.loginState()
	}
	return out
}

// relayPeersChanged tells the relay clients that the consent list changed.
func (n *Node) relayPeersChanged() {
	n.mu.Lock()
	clients := n.relayClients
	n.mu.Unlock()
	for _, rc := range clients {
		poke(rc.wake)
	}
}

// peerKeys returns the keys of every peer in the peer map: the node's consent list for the relay.
func (n *Node) peerKeys() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	keys := make([][]byte, 0, len(n.peers))
	for k := range n.peers {
		keys = append(keys, k[:])
		if len(keys) == control.MaxRelayConsent {
			break
		}
	}
	return keys
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
