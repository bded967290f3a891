package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"net/url"

	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/tcptun"
)

// The TCP fallback's node side (the logic of when to use it is peer's, tunnel.go): a TLS stream to
// the server's TCP port of the same number, directly or through an HTTP proxy.

// openTunnel opens the TCP fallback to the server (coord or relay) at addr: peer.Config.Tunnel. The
// TLS layer checks the same keys the QUIC inside does: the coord's pin or an announced relay's key
// (while neither is known, the QUIC handshake inside still checks the server on first use).
func (n *Node) openTunnel(ctx context.Context, addr netip.AddrPort) (net.PacketConn, error) {
	known := n.serverKeys()
	tlsConf, err := identity.TLSConfig(n.key, tcptun.ALPN, false, func(pub ed25519.PublicKey) error {
		if fp := identity.Fingerprint(pub); len(known) > 0 && !known[fp] {
			return fmt.Errorf("%w: %s presented %s over TCP", ErrCoordKeyMismatch, addr, fp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	proxy, err := n.proxyFor(addr)
	if err != nil {
		return nil, err
	}
	tc, err := tcptun.Dial(ctx, addr.String(), tlsConf, proxy)
	if err != nil {
		return nil, err
	}
	return tcptun.NewConn(tc, net.UDPAddrFromAddrPort(addr)), nil
}

// proxyFor returns the HTTP proxy to reach addr through: --proxy, else HTTPS_PROXY/https_proxy
// (and NO_PROXY); nil = direct.
func (n *Node) proxyFor(addr netip.AddrPort) (*url.URL, error) {
	if n.cfg.Proxy != "" {
		if n.cfg.Proxy == "none" {
			return nil, nil
		}
		u, err := url.Parse(n.cfg.Proxy)
		if err != nil {
			return nil, fmt.Errorf("--proxy: %w", err)
		}
		return u, nil
	}
	return tcptun.ProxyFromEnvironment(addr.String())
}

// serverKeys returns the fingerprints a server the node tunnels to may present: the coord's pin and
// the announced relays' keys.
func (n *Node) serverKeys() map[string]bool {
	keys := make(map[string]bool)
	n.coord.mu.Lock()
	if n.coord.pin != "" {
		keys[n.coord.pin] = true
	}
	n.coord.mu.Unlock()
	n.relays.mu.Lock()
	for _, r := range n.relays.announced {
		keys[r.Key] = true
	}
	n.relays.mu.Unlock()
	return keys
}
