package node

// Attached devices (`warren run`): an unprivileged user creates a TUN device in a user + network
// namespace of its own and hands its descriptor to the node over the local API (POST /v1/attach, see
// localapi.AttachProtocol). The node bridges it like the --tun device (tun.go), through the same
// tunBridge, flow table and filter, with one difference in what goes where:
//
//   - Outbound, each device's packets are routed like the --tun device's, and their flows are
//     tracked with the device's own owner number (ownerAttached and up, so at most 253 at once).
//   - Outbound to destinations outside the overlay (the namespace routes everything through its
//     device unless --overlay-only), each device has an egress stack of its own (egress.go).
//   - Inbound, a packet of a flow a device opened goes to that device only. Everything unsolicited
//     (connections to exposed ports, echo requests, datagrams to exposed UDP ports) goes where it goes
//     without `warren run`: the netstack in proxy mode, the --tun device in TUN mode. Exposed services
//     live on the host, not in the namespaces, so no device ever needs them.
//
// All devices carry the node's own addresses, so two flows with the same 5-tuple (two namespaces, or
// a namespace and the netstack, picking the same ephemeral port towards the same peer port) collide:
// the flow's replies go to whoever sent last. The namespaces' kernels pick ports at random from a
// range of ~28000, so this is rare; it costs the older flow its replies.
//
// An attachment lasts as long as its API connection: when `warren run` exits (or dies) the node closes
// the descriptor, and the namespace and its device go away with their last reference.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/tun"
)

// attachSet tracks the attached devices' owner numbers and handlers.
type attachSet struct {
	mu     sync.Mutex
	used   [256]bool // owner numbers in use (from ownerAttached)
	count  int
	closed bool
	wg     sync.WaitGroup // attachment handlers past their hijack, DNS lookups (goLookup)
	// lookups counts the host DNS lookups under way for the devices (dnshost.go).
	lookups int
}

// maxDNSLookups bounds the host DNS lookups under way at once for all attached devices; queries
// beyond it get no answer (the client retries).
const maxDNSLookups = 64

// goLookup runs f in a goroutine that close waits for, unless maxDNSLookups run already or the
// node is closing.
func (s *attachSet) goLookup(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.lookups >= maxDNSLookups {
		return false
	}
	s.lookups++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			s.lookups--
			s.mu.Unlock()
		}()
		f()
	}()
	return true
}

// reserve takes a free owner number, or reports that none is left or the node is closing.
func (s *attachSet) reserve() (uint8, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	for o := int(ownerAttached); o < len(s.used); o++ {
		if !s.used[o] {
			s.used[o] = true
			s.count++
			s.wg.Add(1)
			return uint8(o), nil
		}
	}
	return 0, fmt.Errorf("too many attached devices (at most %d)", len(s.used)-int(ownerAttached))
}

// close refuses new attachments and waits for the running ones to end (the node's context, canceled
// first by Close, closes their connections).
func (s *attachSet) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// connKey is the request context key of the local API connection (apiServer sets it).
type connKey struct{}

// handleAttach serves POST /v1/attach (see localapi.AttachProtocol).
func (n *Node) handleAttach(w http.ResponseWriter, r *http.Request) {
	conn, _ := r.Context().Value(connKey{}).(*net.UnixConn)
	if conn == nil {
		writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "attach needs the unix socket"})
		return
	}
	if err := checkPeer(conn); err != nil {
		writeJSON(w, http.StatusForbidden, localapi.ErrorReply{Error: err.Error()})
		return
	}
	if r.Header.Get("Upgrade") != localapi.AttachProtocol {
		writeJSON(w, http.StatusBadRequest, localapi.ErrorReply{Error: "attach: want Upgrade: " + localapi.AttachProtocol})
		return
	}
	n.mu.Lock()
	wl := n.welcome
	n.mu.Unlock()
	if wl == nil || n.stack.Load() == nil || (n.cfg.TUN != "" && n.tun.Load() == nil) {
		writeJSON(w, http.StatusServiceUnavailable, localapi.ErrorReply{Error: "the node is not up yet"})
		return
	}
	owner, err := n.attached.reserve()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, localapi.ErrorReply{Error: err.Error()})
		return
	}
	defer n.release(owner)
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, localapi.ErrorReply{Error: "attach: cannot take over the connection"})
		return
	}
	if _, _, err := hj.Hijack(); err != nil {
		n.log.Warn("attach: taking over the connection", "error", err)
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(n.ctx, func() { conn.Close() })
	defer stop()

	info := localapi.AttachInfo{MTU: peer.MaxPacketSize,
		Addrs: []netip.Prefix{netip.PrefixFrom(wl.IPv4, wl.Prefix4.Bits()), netip.PrefixFrom(wl.IPv6, wl.Prefix6.Bits())}}
	d4, d6 := dnsAddrs(wl.Prefix4, wl.Prefix6)
	info.DNS = []netip.Addr{d4, d6}
	info.Egress = !n.cfg.OverlayOnly
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	head := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + localapi.AttachProtocol + "\r\n\r\n"
	line, _ := json.Marshal(info)
	if _, err := conn.Write(append([]byte(head), append(line, '\n')...)); err != nil {
		return
	}
	name := fmt.Sprintf("run%d", owner-ownerAttached)
	dev, err := n.attachDevice(conn, owner, name, info)
	if errors.Is(err, io.EOF) {
		n.log.Debug("attach: the client left before sending a device")
		return
	}
	if err != nil {
		n.log.Warn("attach: refused a device", "error", err)
		reply(conn, localapi.AttachResult{Error: err.Error()})
		return
	}
	n.log.Info("attached a device (warren run)", "device", name)
	conn.SetDeadline(time.Time{})
	if reply(conn, localapi.AttachResult{Device: name}) == nil {
		io.Copy(io.Discard, conn) // until `warren run` exits, or the node closes
	}
	n.detachDevice(owner, dev)
	n.log.Info("detached a device (warren run)", "device", name)
}

func reply(conn net.Conn, res localapi.AttachResult) error {
	line, _ := json.Marshal(res)
	_, err := conn.Write(append(line, '\n'))
	return err
}

// attachDevice receives the descriptor and puts the device on the bridge (created for it in proxy
// mode) as owner.
func (n *Node) attachDevice(conn *net.UnixConn, owner uint8, name string, info localapi.AttachInfo) (*tun.Device, error) {
	f, err := receiveTUN(conn)
	if err != nil {
		return nil, err
	}
	n.attached.mu.Lock()
	defer n.attached.mu.Unlock()
	b := n.tun.Load()
	if b == nil {
		b = newBridge(info.Addrs[0], info.Addrs[1])
		n.tun.Store(b)
	}
	dev, err := tun.FromFile(f, tun.Config{Name: name, Addrs: info.Addrs, MTU: info.MTU,
		Receive:      func(pkt []byte) { n.outputTUN(b, owner, pkt) },
		ReceiveLarge: func(pkt []byte) bool { return n.outputTUNLarge(b, owner, pkt) },
		Logger:       n.log.Named(name)})
	if err != nil {
		return nil, err
	}
	s, err := n.newDeviceStack(dev, owner, name)
	if err != nil {
		dev.Close()
		return nil, err
	}
	b.stacks[owner].Store(s)
	b.devs[owner].Store(dev)
	return dev, nil
}

// detachDevice takes the device off the bridge and closes it with its stack (devstack.go); in proxy
// mode the last one takes the bridge with it.
func (n *Node) detachDevice(owner uint8, dev *tun.Device) {
	n.attached.mu.Lock()
	var stack *netstack.Stack
	if b := n.tun.Load(); b != nil {
		b.devs[owner].Store(nil)
		stack = b.stacks[owner].Swap(nil)
		if n.cfg.TUN == "" && n.attached.count == 1 {
			n.tun.CompareAndSwap(b, nil)
		}
	}
	n.attached.mu.Unlock()
	if stack != nil {
		stack.Close()
	}
	dev.Close()
}

// release frees owner's number.
func (n *Node) release(owner uint8) {
	s := &n.attached
	s.mu.Lock()
	s.used[owner] = false
	s.count--
	s.mu.Unlock()
	s.wg.Done()
}

// receiveAttached is receive for proxy mode: a packet of a flow an attached device opened goes to
// that device, after the same checks as in TUN mode; everything else to the netstack, as always.
func (n *Node) receiveAttached(from peer.Key, pkt []byte) {
	b := n.tun.Load()
	if b == nil {
		n.receive(from, pkt)
		return
	}
	p, ok := packet.Parse(pkt)
	if !ok {
		n.receive(from, pkt)
		return
	}
	v := b.verdict(&p, n.exposed, n.overlay)
	if v < ownerAttached { // unsolicited (ownerTUN: what the kernel would get in TUN mode), or refused
		n.receive(from, pkt)
		return
	}
	d := b.devs[v].Load()
	if d == nil || !n.admit(from, pkt) || !n.filterACL(n.routes.Load(), from, pkt) {
		return
	}
	d.Write(pkt)
}
