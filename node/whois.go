package node

// Who connected: in proxy mode an exposed service sees every visitor as 127.0.0.1. For each local
// TCP dial the node makes for a peer (the stream path's acceptStream, the netstack's forwarder through
// Config.DialLocal) it records the dialing socket's local address, as the service sees its client,
// with the peer's key and overlay address, until the connection closes (whoisTable, bounded).
// `warren whois ADDR:PORT` (GET /v1/whois) reads it. Ports with +proxy also get a PROXY protocol
// v2 header first on the connection (proxyproto.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// maxWhois bounds the whois table; dials beyond it still work, they are only not recorded.
const maxWhois = 65536

// whoisEntry is one local connection the node made for a peer.
type whoisEntry struct {
	key  peer.Key
	flow netstack.Flow // the peer's overlay address and port and this node's
}

// whoisTable maps the local address of a dialing socket to the peer it serves. Safe for concurrent use.
type whoisTable struct {
	mu sync.Mutex
	m  map[netip.AddrPort]whoisEntry
}

func (t *whoisTable) add(local netip.AddrPort, e whoisEntry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[netip.AddrPort]whoisEntry)
	}
	if len(t.m) >= maxWhois {
		return false
	}
	t.m[local] = e
	return true
}

func (t *whoisTable) remove(local netip.AddrPort) {
	t.mu.Lock()
	delete(t.m, local)
	t.mu.Unlock()
}

func (t *whoisTable) get(local netip.AddrPort) (whoisEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[local]
	return e, ok
}

// whoisConn removes its whois entry when closed.
type whoisConn struct {
	net.Conn
	t     *whoisTable
	local netip.AddrPort
	once  sync.Once
}

func (c *whoisConn) Close() error {
	c.once.Do(func() { c.t.remove(c.local) })
	return c.Conn.Close()
}

// CloseWrite passes a half-close on to a TCP connection.
func (c *whoisConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("node: connection has no half-close")
}

// dialLocal dials an exposed service on localhost for the peer key (or, if key is zero, the peer
// owning flow's source address), writes a PROXY v2 header first when the port asks for one, and
// records the connection for whois.
func (n *Node) dialLocal(ctx context.Context, network, addr string, key peer.Key, flow netstack.Flow) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n.inboundExposed.Add(1)
	if network != "tcp" {
		// The netstack keeps UDP flows as *net.UDPConn, and a whois entry would outlive them: UDP is
		// not recorded.
		return c, nil
	}
	if n.proxyHeader[flow.Dst.Port()] {
		if !flow.Src.IsValid() || !flow.Dst.IsValid() {
			c.Close()
			return nil, errors.New("PROXY header: the peer's overlay address is not known")
		}
		if _, err := c.Write(appendProxyV2(nil, flow.Src, flow.Dst)); err != nil {
			c.Close()
			return nil, fmt.Errorf("PROXY header: %w", err)
		}
	}
	if key == (peer.Key{}) {
		if p, ok := n.peers.byIP(flow.Src.Addr()); ok {
			key, _ = peer.KeyOf(p.Key)
		}
	}
	local, ok := addrPortOf(c.LocalAddr())
	if !ok || key == (peer.Key{}) || !n.whois.add(local, whoisEntry{key: key, flow: flow}) {
		return c, nil
	}
	return &whoisConn{Conn: c, t: &n.whois, local: local}, nil
}

// stackDialLocal is the netstack's Config.DialLocal: the flow comes in ctx.
func (n *Node) stackDialLocal(ctx context.Context, network, addr string) (net.Conn, error) {
	flow, _ := netstack.FlowOf(ctx)
	return n.dialLocal(ctx, network, addr, peer.Key{}, flow)
}

// addrPortOf returns a TCP or UDP address as an AddrPort, IPv4 unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		return ap, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// byIP returns the peer with overlay address ip.
func (s *peerState) byIP(ip netip.Addr) (control.Peer, bool) {
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.peers {
		for _, a := range p.IPs {
			if a == ip {
				return p, true
			}
		}
	}
	return control.Peer{}, false
}

// Whois names the peer behind a local connection the node made to an exposed service, by the
// address the service sees as its client's (the dialing socket's local address).
func (n *Node) Whois(addr netip.AddrPort) (localapi.Whois, bool) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	e, ok := n.whois.get(addr)
	if !ok {
		return localapi.Whois{}, false
	}
	w := localapi.Whois{Addr: addr.String(), Key: identity.Fingerprint(e.key[:]), Source: e.flow.Src.String()}
	if e.flow.Dst.Port() != 0 {
		w.Port = e.flow.Dst.Port()
	}
	n.peers.mu.Lock()
	p, ok := n.peers.peers[e.key]
	n.peers.mu.Unlock()
	if ok {
		w.Name, w.IPs, w.Networks = p.Name, p.IPs, p.Networks
	}
	return w, true
}

// streamFlow is the flow of a peer's stream to port: the stream path carries no source port, so
// the peer's side has port 0 (as the PROXY header then says).
func (n *Node) streamFlow(from peer.Key, port uint16) netstack.Flow {
	var f netstack.Flow
	n.peers.mu.Lock()
	if p, ok := n.peers.peers[from]; ok {
		for _, a := range p.IPs {
			if a.Is4() {
				f.Src = netip.AddrPortFrom(a, 0)
				break
			}
		}
	}
	n.peers.mu.Unlock()
	n.mu.Lock()
	if w := n.welcome; w != nil {
		f.Dst = netip.AddrPortFrom(w.IPv4, port)
	}
	n.mu.Unlock()
	if !f.Dst.IsValid() {
		f.Dst = netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	}
	return f
}

// exposedList lists the exposed ports as --expose takes them, in the order they were given.
func (n *Node) exposedList() []string {
	out := make([]string, 0, len(n.cfg.Expose))
	for _, p := range n.cfg.Expose {
		s := fmt.Sprintf("%s:%d", p.Proto, p.Port)
		if p.Proto == "tcp" && n.proxyHeader[p.Port] {
			s += "+proxy"
		}
		out = append(out, s)
	}
	return out
}
