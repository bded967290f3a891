package peer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
)

// Hard NATs: the birthday technique. Plain hole punching fails between a NAT that maps every
// destination to a new random public port (endpoint-dependent, "symmetric": the hard side, H) and one
// that keeps one public port per socket but filters by remote port (the easy side, E): H's pings leave
// from a port nobody knows, and E's router drops them. Guessing that port takes tens of thousands of
// probes; but if H opens many sockets, each sending to E's public address (so many random mappings
// exist), and E probes random ports of H's public address, the chance that some probe hits some
// mapping is 1−e^(−sockets·probes/ports): 98% for 256 sockets and 1024 probes over the 64512 ports a
// Linux NAT picks from (measured in the lab: e2e TestHardNATTechniques). One socket alone, or port
// prediction against a random allocator, almost never succeeds.
//
// So when both sides' NAT discovery says one is hard and the other easy, and no probe has been
// answered for RelayDelay (the relay carries the traffic meanwhile), H opens birthdaySockets sockets
// that ping E's public address, and E sprays signed pings at birthdayProbes random ports of H's
// public address. The first H socket that hears from E answers; E's pong handler accepts a pong from
// any port of the sprayed address, and E dials QUIC there, whatever the key order. H accepts that one
// connection on a QUIC transport of its own over the winning socket, which lives as long as the link.
// The other sockets close at once. Attempts repeat with backoff while the pair has no direct link.
// Two hard sides would need two coincidences at once: they stay on the relay.

const (
	birthdaySockets = 256                    // sockets the hard side opens per attempt
	maxHardSockets  = 4 * birthdaySockets    // all attempts together (with many hard peers at once)
	birthdayProbes  = 1024                   // probes the easy side sprays per attempt
	sprayBurst      = 16                     // probes per tick of the spray...
	sprayTick       = 16 * time.Millisecond  // ...so a spray takes about a second
	sprayDelay      = 300 * time.Millisecond // lets the hard side open its mappings first
	birthdayWindow  = 5 * time.Second        // how long the hard side's sockets wait
	birthdayResend  = time.Second            // the hard side's pings refresh its mappings
)

// birthdayRole says what this node does in a birthday attempt with a peer: "hard" opens sockets, "easy"
// sprays probes, "" means the technique does not apply (both easy: plain punching works; unknown: no
// NAT discovery yet; both hard: hopeless, unless both NATs allocate sequentially (predict.go), where
// the lower key (lower) opens the sockets and the other sprays). ports are the sides' port patterns.
func birthdayRole(self, peer control.Mapping, selfPorts, peerPorts *control.Ports, lower bool) string {
	switch {
	case self == control.MappingDependent && peer == control.MappingIndependent:
		return "hard"
	case self == control.MappingIndependent && peer == control.MappingDependent:
		return "easy"
	case self == control.MappingDependent && peer == control.MappingDependent && selfPorts != nil && peerPorts != nil:
		if lower {
			return "hard"
		}
		return "easy"
	}
	return ""
}

// SetMapping records this node's NAT mapping behaviour and, for an endpoint-dependent NAT that
// allocates sequentially, its port pattern (from its NAT discovery; nil = none), which decide its
// role in the birthday technique with each peer.
func (e *Endpoint) SetMapping(m control.Mapping, ports *control.Ports) {
	e.mu.Lock()
	changed := e.mapping != m || (e.ports == nil) != (ports == nil)
	e.mapping, e.ports = m, ports
	if changed {
		for _, ps := range e.peers {
			poke(ps.wake)
		}
	}
	e.mu.Unlock()
}

// startBirthday starts an attempt with peer k in the given role, unless one is under way. The peer's
// first endpoint is its public address (Info.Endpoints). Where a side's NAT allocates sequentially,
// the attempt aims at its predicted ports (predict.go).
func (e *Endpoint) startBirthday(ctx context.Context, k Key, ps *peerState, role string, public netip.AddrPort) {
	if !public.IsValid() || !public.Addr().Is4() || !ps.hardBusy.CompareAndSwap(false, true) {
		return
	}
	e.mu.RLock()
	selfPorts, peerPorts := e.ports, ps.info.Ports
	e.mu.RUnlock()
	e.log.Debug("hard NAT: birthday attempt", "peer", e.Who(k), "role", role, "peer_public", public,
		"predicted", peerPorts != nil)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer ps.hardBusy.Store(false)
		switch {
		case role == "easy" && selfPorts != nil && peerPorts != nil:
			if err := e.sprayPaired(ctx, k, public.Addr(), predictPorts(*peerPorts, birthdayProbes)); err != nil && ctx.Err() == nil {
				e.log.Debug("hard NAT: birthday attempt failed", "peer", e.Who(k), "error", err)
			}
		case role == "easy":
			ports := randomPorts(birthdayProbes)
			if peerPorts != nil {
				ports = predictPorts(*peerPorts, birthdayProbes)
			}
			e.spray(ctx, k, ps, public.Addr(), ports)
		default:
			if err := e.openMany(ctx, k, hardTargets(public, selfPorts, peerPorts)); err != nil && ctx.Err() == nil {
				e.log.Debug("hard NAT: birthday attempt failed", "peer", e.Who(k), "error", err)
			}
		}
		// Sockets or probes behind our sequential NAT moved its counter.
		if selfPorts != nil && e.cfg.OnPortsUsed != nil && ctx.Err() == nil {
			e.cfg.OnPortsUsed()
		}
	}()
}

// hardTargets returns where the hard side's sockets ping, one address per socket: the peer's public
// address from birthdaySockets sockets, or from sequentialSockets if our own NAT allocates
// sequentially (the peer's spray finds them); towards a peer behind a sequential NAT too, the ports
// pairedTargets predicts.
func hardTargets(public netip.AddrPort, selfPorts, peerPorts *control.Ports) []netip.AddrPort {
	if peerPorts != nil {
		ports := pairedTargets(*peerPorts, birthdaySockets)
		out := make([]netip.AddrPort, len(ports))
		for i, port := range ports {
			out[i] = netip.AddrPortFrom(public.Addr(), port)
		}
		return out
	}
	n := birthdaySockets
	if selfPorts != nil {
		n = sequentialSockets
	}
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = public
	}
	return out
}

// spray sends one signed ping (one txid, so one signature) to each of ports of ip in order, sprayBurst
// per sprayTick, stopping early once a pong arrives.
func (e *Endpoint) spray(ctx context.Context, k Key, ps *peerState, ip netip.Addr, ports []uint16) {
	select {
	case <-time.After(sprayDelay):
	case <-ctx.Done():
		return
	}
	var tx txID
	rand.Read(tx[:])
	e.mu.Lock()
	ps.pending[tx] = pendingPing{to: netip.AddrPortFrom(ip, 0), sent: time.Now(), spray: true}
	ps.sprayHit = netip.AddrPort{}
	e.mu.Unlock()
	ping := appendProbe(nil, e.cfg.Key, kindPing, e.self, k, tx, netip.AddrPort{})
	sent, hit := sprayPorts(ctx, ip, ports, func(to netip.AddrPort) { e.writeSide(ping, to) }, func() bool {
		e.mu.RLock()
		defer e.mu.RUnlock()
		return ps.sprayHit.IsValid()
	})
	if hit {
		e.log.Debug("hard NAT: spray answered", "peer", e.Who(k), "probes", sent)
	}
}

// sprayPorts sends one probe (send) to each of ports of ip in order, sprayBurst per sprayTick, until
// answered says one was answered or ctx ends. It returns how many it sent and whether one was answered.
func sprayPorts(ctx context.Context, ip netip.Addr, ports []uint16, send func(netip.AddrPort), answered func() bool) (int, bool) {
	tick := time.NewTicker(sprayTick)
	defer tick.Stop()
	for sent := 0; sent < len(ports); {
		for _, port := range ports[sent:min(sent+sprayBurst, len(ports))] {
			send(netip.AddrPortFrom(ip, port))
			sent++
		}
		select {
		case <-ctx.Done():
			return sent, false
		case <-tick.C:
		}
		if answered() {
			return sent, true
		}
	}
	return len(ports), false
}

// sprayPaired is the spraying side between two sequential NATs (predict.go): the same spray, from a
// socket of its own, which then dials the peer's socket that answered. Every probe must open a new
// mapping, so that probe j leaves from the j-th next port of the counter. From the node's own socket
// a probe to a port that an earlier attempt's spray already reached reuses the mapping the NAT still
// keeps for that destination (unanswered UDP mappings live about 30 s), so the counter skips those
// probes and the pairing fails: in the lab every retry within 30 s of the last one missed.
func (e *Endpoint) sprayPaired(ctx context.Context, k Key, ip netip.Addr, ports []uint16) error {
	bind, err := e.extraBind()
	if err != nil {
		return err
	}
	if e.reserveHardSockets(1) == 0 {
		return fmt.Errorf("%d sockets are open for attempts with other peers", maxHardSockets)
	}
	defer e.hardSocks.Add(-1)
	c, err := net.ListenUDP("udp4", bind)
	if err != nil {
		return err
	}
	start := time.Now()
	var tx txID
	rand.Read(tx[:])
	ping := appendProbe(nil, e.cfg.Key, kindPing, e.self, k, tx, netip.AddrPort{})
	// The reader takes the first pong to the spray's ping from any port of ip; it ends with the
	// socket's deadline.
	hits := make(chan netip.AddrPort, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var buf [pongSize]byte
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf[:])
			if err != nil {
				return
			}
			from = unmapped(from)
			if from.Addr() != ip {
				continue
			}
			p, err := parseProbe(buf[:n])
			if err != nil || p.kind != kindPong || p.from != k || p.tx != tx || !e.probes.Allow() || !p.verify(e.self) {
				continue
			}
			hits <- from
			return
		}
	}()
	stopReader := func() {
		c.SetReadDeadline(time.Now())
		<-readerDone
	}
	var hit netip.AddrPort
	answered := func() bool {
		select {
		case hit = <-hits:
			return true
		default:
			return false
		}
	}
	select {
	case <-time.After(sprayDelay):
	case <-ctx.Done():
		stopReader()
		c.Close()
		return ctx.Err()
	}
	sent, ok := sprayPorts(ctx, ip, ports, func(to netip.AddrPort) { c.WriteToUDPAddrPort(ping, to) }, answered)
	if !ok && ctx.Err() == nil { // a pong to one of the last probes may still be on its way
		wait := time.NewTimer(max(e.hardWindow-time.Since(start), sprayTick))
		select {
		case hit = <-hits:
		case <-wait.C:
		case <-ctx.Done():
		}
		wait.Stop()
	}
	stopReader()
	if !hit.IsValid() {
		c.Close()
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("no answer to %d probes", sent)
	}
	c.SetReadDeadline(time.Time{})
	e.log.Debug("hard NAT: spray answered", "peer", e.Who(k), "addr", hit, "probes", sent, "after", time.Since(start))
	return e.dialOn(ctx, k, c, hit)
}

// reserveHardSockets takes up to want of the sockets left for birthday attempts and returns how
// many it took; the caller gives them back (hardSocks.Add(-n)) when its attempt ends.
func (e *Endpoint) reserveHardSockets(want int) int {
	for {
		used := e.hardSocks.Load()
		n := min(int32(want), maxHardSockets-used)
		if n <= 0 {
			return 0
		}
		if e.hardSocks.CompareAndSwap(used, used+n) {
			return int(n)
		}
	}
}

// openMany is the hard side of an attempt: a socket per target (hardTargets) pings its target until
// one of them hears from the peer; that socket then accepts the peer's QUIC connection.
func (e *Endpoint) openMany(ctx context.Context, k Key, targets []netip.AddrPort) error {
	bind, err := e.extraBind()
	if err != nil {
		return err
	}
	// Attempts with several peers at once share maxHardSockets; fewer sockets still give a fair
	// chance (1−e^(−64·1024/64512) = 64% for a quarter), a handful is not worth trying.
	want := len(targets)
	budget := e.reserveHardSockets(want)
	defer e.hardSocks.Add(-int32(budget))
	if budget < (want+3)/4 {
		return fmt.Errorf("%d other sockets are open for attempts with other peers", maxHardSockets-budget)
	}
	socks := make([]*net.UDPConn, 0, budget)
	for range budget {
		c, err := net.ListenUDP("udp4", bind)
		if err != nil {
			if len(socks) < (want+3)/4 {
				for _, c := range socks {
					c.Close()
				}
				return err // out of file descriptors, say: not worth trying with a handful
			}
			break
		}
		socks = append(socks, c)
	}
	var tx txID
	rand.Read(tx[:])
	ping := appendProbe(nil, e.cfg.Key, kindPing, e.self, k, tx, netip.AddrPort{})

	type win struct {
		c    *net.UDPConn
		from netip.AddrPort
		pong bool // our own ping got through: the peer answered it
	}
	var (
		won   atomic.Bool
		wins  = make(chan win, 1)
		wg    sync.WaitGroup
		until = time.Now().Add(e.hardWindow)
	)
	for i, c := range socks {
		c.SetReadDeadline(until)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [pongSize]byte
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf[:])
				if err != nil {
					return
				}
				// Only a probe from the address this socket pings can open a path both ways: our NAT
				// maps each destination apart, so an answer to any other address would leave from a
				// new public port, which the peer's NAT drops. A NAT that filters by address only lets
				// such probes in (between two sequential NATs the spray reaches socket 0 from the wrong
				// port first whenever the counters drifted, predict.go); taking that one-way hit as the
				// win would close the socket that matches a few probes later.
				from = unmapped(from)
				if from != targets[i] {
					continue
				}
				p, err := parseProbe(buf[:n])
				if err != nil || p.from != k || (p.kind == kindPong && p.tx != tx) || !e.probes.Allow() || !p.verify(e.self) {
					continue
				}
				if p.kind == kindPing {
					var out [pongSize]byte
					c.WriteToUDPAddrPort(appendProbe(out[:0], e.cfg.Key, kindPong, e.self, k, p.tx, from), from)
				}
				if won.CompareAndSwap(false, true) {
					wins <- win{c, from, p.kind == kindPong}
				}
				return
			}
		}()
	}
	// In order: behind a sequential NAT, socket i takes the i-th port of the counter (predict.go).
	sendAll := func() {
		for i, c := range socks {
			c.WriteToUDPAddrPort(ping, targets[i])
		}
	}
	sendAll()
	resend := time.NewTicker(birthdayResend)
	defer resend.Stop()
	timeout := time.NewTimer(e.hardWindow)
	defer timeout.Stop()
	var w win
wait:
	for {
		select {
		case w = <-wins:
			break wait
		case <-resend.C:
			sendAll()
		case <-timeout.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, c := range socks {
		if c != w.c {
			c.Close()
		}
	}
	wg.Wait()
	if w.c == nil {
		return errors.New("no probe reached any socket")
	}
	w.c.SetReadDeadline(time.Time{})
	e.log.Debug("hard NAT: a probe got through", "peer", e.Who(k), "local", w.c.LocalAddr(), "peer_addr", w.from, "our_ping_answered", w.pong)
	if w.pong {
		// Our ping crossed the peer's NAT (a mapping its earlier spray left open): the peer saw a
		// ping, not a spray hit, and will not dial. We do, from this socket.
		return e.dialOn(ctx, k, w.c, w.from)
	}
	return e.acceptOn(ctx, k, w.c)
}

// extraBind is the address extra IPv4 sockets (birthday attempts, NAT discovery's port probes) bind
// to: the node socket's address if it is bound to one, so they leave by the same way.
func (e *Endpoint) extraBind() (*net.UDPAddr, error) {
	local := e.LocalAddr().Addr()
	if local.Is6() && !local.Is4In6() && !local.IsUnspecified() {
		return nil, errors.New("the node's socket is IPv6-only")
	}
	bind := &net.UDPAddr{}
	if local.Unmap().Is4() {
		bind.IP = local.Unmap().AsSlice()
	}
	return bind, nil
}

// dialOn dials k at addr from socket c and installs the link, which keeps c.
func (e *Endpoint) dialOn(ctx context.Context, k Key, c *net.UDPConn, addr netip.AddrPort) error {
	tr := &quic.Transport{Conn: c, ConnectionIDLength: connIDLen}
	release := func() {
		tr.Close()
		c.Close()
	}
	tlsConf, err := e.clientTLS(k)
	if err != nil {
		release()
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(addr), tlsConf, e.quicConf)
	if err != nil {
		release()
		return err
	}
	if !e.installLink(k, &link{conn: conn, path: PathDirect, release: release}) {
		conn.CloseWithError(1, "not a peer")
		release()
		return errors.New("no longer a peer")
	}
	return nil
}

// acceptOn accepts peer k's QUIC connection on a transport of its own over c and installs it as a
// direct link that closes c when it ends.
func (e *Endpoint) acceptOn(ctx context.Context, k Key, c *net.UDPConn) error {
	tr := &quic.Transport{Conn: c, ConnectionIDLength: connIDLen}
	release := func() {
		tr.Close()
		c.Close()
	}
	ln, err := tr.Listen(e.serverTLS, e.quicConf)
	if err != nil {
		release()
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 2*e.cfg.DialTimeout)
	defer cancel()
	for {
		conn, err := ln.Accept(actx)
		if err != nil {
			release()
			return err
		}
		if rk, err := remoteKey(conn); err != nil || rk != k || e.noDirect.Load() {
			conn.CloseWithError(1, "not this peer")
			continue
		}
		ln.Close() // one connection per socket; it carries on
		if !e.installLink(k, &link{conn: conn, path: PathDirect, release: release}) {
			conn.CloseWithError(1, "not a peer")
			release()
			return errors.New("no longer a peer")
		}
		return nil
	}
}
