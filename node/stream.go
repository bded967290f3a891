package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/relay"
)

// dial opens a proxied connection to an overlay address. TCP to a peer rides its own QUIC stream (the
// stream path: no netstack on either side, QUIC's congestion control end to end); everything else,
// and TCP when Config.PacketPathTCP is set, goes through the netstack as IP packets.
func (n *Node) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	stack := n.stack.Load()
	if stack == nil {
		return nil, errClosed
	}
	if n.cfg.PacketPathTCP || (network != "tcp" && network != "tcp4" && network != "tcp6") {
		return stack.DialContext(ctx, network, addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	k, ok := n.routes.Load().owner[ap.Addr().Unmap()]
	if !ok {
		// Not a peer's address (our own, or nobody's): let the netstack answer.
		return stack.DialContext(ctx, network, addr)
	}
	return n.ep.DialStream(ctx, k, peer.StreamHeader{Proto: peer.ProtoTCP, Port: ap.Port()})
}

// acceptStream serves a peer's stream to an exposed TCP port by dialing it on localhost; anything else
// is refused, as the netstack would answer an unexposed port with a RST.
func (n *Node) acceptStream(from peer.Key, h peer.StreamHeader, c net.Conn) {
	if h.Proto != peer.ProtoTCP || !n.exposed[Port{"tcp", h.Port}] {
		if n.log.IsDebug() {
			n.log.Debug("refused stream to unexposed port", "peer", from, "port", h.Port)
		}
		peer.Refuse(c)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	local, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(h.Port))))
	cancel()
	if err != nil {
		n.log.Debug("exposed port not answering on localhost", "port", h.Port, "error", err)
		peer.Refuse(c)
		return
	}
	defer local.Close()
	defer c.Close()
	if err := peer.Accept(c); err != nil {
		return
	}
	relay.Copy(c, nil, local)
}
