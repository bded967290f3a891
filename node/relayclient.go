package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/backoff"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// relayClient keeps the node logged in to a standalone relay that the coord announced: a QUIC
// connection from the node's one UDP socket (so the relay knows which address speaks for the node's
// key) carrying the node's consent list, its current peer keys, resent whenever the peer map changes.
// It reconnects with backoff and does not depend on the coord: relayed links keep working while the
// coord is down. The connection's keep-alives also keep the NAT mapping towards the relay open, and
// quic-go migrates it when the NAT rebinds; the relay follows (udprelay.Server).
type relayClient struct {
	info control.Relay
	key  *identity.Key
	log  hclog.Logger
	dial func(ctx context.Context, addr netip.AddrPort, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error)
	// consent returns the keys of the peers the node wants to reach through the relay.
	consent func() [][]byte
	// onLogin is called after each successful login (the node points its peer links at the relay).
	onLogin func()
	wake    chan struct{} // the consent list changed
	cancel  context.CancelFunc
	up      atomic.Bool // logged in now
}

// relayWriteTimeout bounds one consent list write; a relay that does not read is dropped.
const relayWriteTimeout = 10 * time.Second

// run keeps the login up until ctx ends.
func (r *relayClient) run(ctx context.Context) {
	bo := backoff.New(500*time.Millisecond, 15*time.Second)
	wasUp := true // log the first failure
	for ctx.Err() == nil {
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		if wasUp || r.up.Load() {
			r.log.Warn("relay connection lost or refused; retrying in the background", "relay", r.info.Addr, "error", err)
		}
		wasUp = false
		r.up.Store(false)
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
		return fmt.Errorf("relay login not accepted: %v", errOr(err, "unexpected answer"))
	}
	r.up.Store(true)
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

// useRelays applies the relays the coord announced: the first standalone relay if there is one (every
// node of a coord gets the same list, so peers meet on the same relay), else the coord's own relay at
// coordAddr if it offers one (an invalid coordAddr keeps the current choice), else none.
func (n *Node) useRelays(w *control.Welcome, coordAddr netip.AddrPort) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.relays = w.Relays
	if len(w.Relays) > 0 {
		want := w.Relays[0]
		if n.relay != nil && n.relay.info == want {
			return
		}
		n.stopRelayLocked()
		n.startRelayLocked(want)
		return
	}
	n.stopRelayLocked()
	switch {
	case w.Relay && coordAddr.IsValid():
		n.ep.SetRelay(coordAddr)
	case !w.Relay:
		n.ep.SetRelay(netip.AddrPort{})
	}
}

func (n *Node) startRelayLocked(info control.Relay) {
	ctx, cancel := context.WithCancel(n.ctx)
	rc := &relayClient{info: info, key: n.key, log: n.log.Named("relay"), dial: n.ep.DialControl,
		consent: n.peerKeys, wake: make(chan struct{}, 1), cancel: cancel}
	rc.onLogin = func() {
		n.mu.Lock()
		current := n.relay == rc
		n.mu.Unlock()
		if current {
			n.ep.SetRelay(info.Addr)
		}
	}
	n.relay = rc
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		rc.run(ctx)
	}()
}

func (n *Node) stopRelayLocked() {
	if n.relay != nil {
		n.relay.cancel()
		n.relay = nil
	}
}

// relayPeersChanged tells the relay client that the consent list changed.
func (n *Node) relayPeersChanged() {
	n.mu.Lock()
	rc := n.relay
	n.mu.Unlock()
	if rc != nil {
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
