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
	"github.com/warren-net/warren/peer"
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

// relayLink is what the relays need of the peer endpoint: its socket, to log in from, and the list of
// relays its links may use. *peer.Endpoint implements it.
type relayLink interface {
	DialControl(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error)
	SetRelays(addrs []netip.AddrPort)
}

var _ relayLink = (*peer.Endpoint)(nil)

// relaySet is the node's relays: the standalone relays the coord announced, a logged-in relayClient
// for each, and the coord's own relay while the coord offers one and the node is connected to it. It
// tells the peer links which relays to use (apply) whenever a login comes up or goes down or the
// set changes, and owns the clients' goroutines. Safe for concurrent use once bound.
type relaySet struct {
	ctx     context.Context // the node's: alive until Close
	log     hclog.Logger
	consent func() [][]byte // the peers the node wants to reach through a relay
	wg      sync.WaitGroup  // every client's goroutine

	// key and link are set once by bind, before the first use.
	key  *identity.Key
	link relayLink

	applyMu sync.Mutex // serialises apply, so the last state wins

	// mu guards the following.
	mu         sync.Mutex
	announced  []control.Relay // the standalone relays the coord announced last
	clients    []*relayClient  // the logins to them, in the announced order
	coordRelay netip.AddrPort  // the coord's own relay while it offers one and the node is connected
	closed     bool
}

func newRelaySet(ctx context.Context, log hclog.Logger, consent func() [][]byte) *relaySet {
	return &relaySet{ctx: ctx, log: log, consent: consent}
}

// bind gives the set the node's key and peer endpoint, once, before use is first called.
func (s *relaySet) bind(key *identity.Key, link relayLink) {
	s.key, s.link = key, link
}

// use applies the relays the coord announced in w. The node logs in to every announced relay (a
// relayClient each, in the announced order, duplicates once) and keeps the logins it already has;
// the coord's own relay at coordAddr, if the coord offers one, comes last: the last resort. An
// invalid coordAddr (the coord is not connected) leaves the coord's relay out. Which of the relays a
// peer link uses is the peer package's choice among those the node is logged in to
// (peer/relaypath.go): peers that fail over to another relay find each other there.
func (s *relaySet) use(w *control.Welcome, coordAddr netip.AddrPort) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.announced = w.Relays
	old := make(map[control.Relay]*relayClient, len(s.clients))
	for _, rc := range s.clients {
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
			rc = s.startLocked(info)
		}
		delete(old, info)
		clients = append(clients, rc)
	}
	for _, rc := range old {
		rc.cancel()
	}
	s.clients = clients
	s.coordRelay = netip.AddrPort{}
	if w.Relay {
		s.coordRelay = coordAddr
	}
	s.mu.Unlock()
	s.apply()
}

// coordLost takes the coord's relay out of use: the coord forgets a node's relay binding with its
// control connection.
func (s *relaySet) coordLost() {
	s.mu.Lock()
	s.coordRelay = netip.AddrPort{}
	s.mu.Unlock()
	s.apply()
}

// apply tells the peer links which relays the node is logged in to now: the announced ones whose
// login is up, in the announced order, then the coord's.
func (s *relaySet) apply() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	use := make([]netip.AddrPort, 0, len(s.clients)+1)
	for _, rc := range s.clients {
		if rc.up.Load() {
			use = append(use, rc.info.Addr)
		}
	}
	if s.coordRelay.IsValid() {
		use = append(use, s.coordRelay)
	}
	s.mu.Unlock()
	s.link.SetRelays(use)
}

func (s *relaySet) startLocked(info control.Relay) *relayClient {
	ctx, cancel := context.WithCancel(s.ctx)
	rc := &relayClient{info: info, key: s.key, log: s.log, dial: s.link.DialControl,
		consent: s.consent, wake: make(chan struct{}, 1), cancel: cancel,
		onLogin: s.apply, onLogout: s.apply}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		rc.run(ctx)
	}()
	return rc
}

// logins returns the state of the node's relay logins by relay address.
func (s *relaySet) logins() map[netip.AddrPort]string {
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	out := make(map[netip.AddrPort]string, len(clients))
	for _, rc := range clients {
		out[rc.info.Addr] = rc.loginState()
	}
	return out
}

// addrs returns the addresses of the announced relays.
func (s *relaySet) addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, len(s.announced))
	for i, r := range s.announced {
		out[i] = r.Addr
	}
	return out
}

// peersChanged tells the clients that the consent list changed.
func (s *relaySet) peersChanged() {
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	for _, rc := range clients {
		poke(rc.wake)
	}
}

// close starts no more clients and waits for the running ones, which end with the node's context:
// cancel it first.
func (s *relaySet) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
