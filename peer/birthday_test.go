package peer

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
)

func TestBirthdayRole(t *testing.T) {
	in, dep, unk := control.MappingIndependent, control.MappingDependent, control.MappingUnknown
	seq := &control.Ports{Delta: 1, Last: 30000}
	for _, c := range []struct {
		self, peer         control.Mapping
		selfPorts, peerPts *control.Ports
		lower              bool
		want               string
	}{
		{dep, in, nil, nil, false, "hard"}, {in, dep, nil, nil, true, "easy"},
		{in, in, nil, nil, true, ""}, {dep, dep, nil, nil, true, ""}, // plain punching works / nothing works
		{unk, dep, nil, nil, true, ""}, {dep, unk, nil, nil, true, ""}, {unk, unk, nil, nil, true, ""}, // no NAT discovery yet
		// Sequential NATs (predict.go): against an easy peer as any hard side; two of them pair up by key.
		{dep, in, seq, nil, true, "hard"}, {in, dep, nil, seq, false, "easy"},
		{dep, dep, seq, seq, true, "hard"}, {dep, dep, seq, seq, false, "easy"},
		{dep, dep, seq, nil, true, ""}, {dep, dep, nil, seq, false, ""}, // one random side: hopeless
		{dep, unk, seq, nil, true, ""},
	} {
		if got := birthdayRole(c.self, c.peer, c.selfPorts, c.peerPts, c.lower); got != c.want {
			t.Errorf("birthdayRole(%q, %q, %v, %v, lower %v) = %q, want %q", c.self, c.peer, c.selfPorts, c.peerPts, c.lower, got, c.want)
		}
	}
}

// othersSockets is how many sockets startHardSide's other attempt sockets ping: 32 pings a second each.
const othersSockets = 8

// startHardSide starts a hard side h and an easy side e that know each other without endpoints (so
// probes and links are accepted but never punched to), and h's birthday attempt, whose result arrives
// on done. Socket 0 of the attempt pings public, a socket standing for the easy side's NAT; the other
// sockets ping others, given with how many of them ping each. A real easy side gets every socket's
// pings on one address; here they go apart so that public, which the tests read for pongs, gets one
// ping a second instead of a burst of birthdaySockets that could fill its receive buffer and drop the
// pong a test waits for; and the rest go to several sockets, as a burst of 255 on one (some 196 KB of
// buffer space against a default of 208 KB) could drop pings too.
func startHardSide(t *testing.T) (h, e *testNode, public *net.UDPConn, others map[*net.UDPConn]int, done <-chan error) {
	t.Helper()
	h, e = newUDPTestNode(t), newUDPTestNode(t)
	h.ep.SetPeers([]Info{{Key: e.key}})
	e.ep.SetPeers([]Info{{Key: h.key}})
	// The sockets wait far longer than a loaded machine (-race, other packages in parallel) can
	// take to deliver the test's probes; the read deadlines below are safety nets, not timing.
	h.ep.hardWindow = time.Minute
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	public = listen()
	spread := make([]*net.UDPConn, othersSockets)
	for i := range spread {
		spread[i] = listen()
	}
	targets := hardTargets(public.LocalAddr().(*net.UDPAddr).AddrPort(), nil, nil)
	others = make(map[*net.UDPConn]int)
	for i := 1; i < len(targets); i++ {
		c := spread[i%othersSockets]
		targets[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		others[c]++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	result := make(chan error, 1)
	go func() {
		result <- h.ep.openMany(ctx, e.key, targets)
	}()
	return h, e, public, others, result
}

// pingSources reads c until it has signed pings from h (for peer) from want sockets, and returns
// their addresses.
func pingSources(t *testing.T, c *net.UDPConn, h, peer *testNode, want int) map[netip.AddrPort]bool {
	t.Helper()
	sources := map[netip.AddrPort]bool{}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for len(sources) < want {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("got pings from %d sockets, want %d: %v", len(sources), want, err)
		}
		p, err := parseProbe(buf[:n])
		if err != nil || p.kind != kindPing || p.from != h.key || !p.verify(peer.key) {
			t.Fatalf("not a signed ping from the hard side: %v %+v", err, p)
		}
		sources[unmapped(from)] = true
	}
	return sources
}

// awaitPong reads c until a pong signed by h for tx comes from the socket at from.
func awaitPong(t *testing.T, c *net.UDPConn, from netip.AddrPort, tx txID, peer *testNode) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no pong from the socket that was reached (%v): %v", from, err)
		}
		if p, err := parseProbe(buf[:n]); err == nil && p.kind == kindPong && unmapped(src) == from && p.tx == tx && p.verify(peer.key) {
			return
		}
	}
}

// TestBirthdayHardSide plays the easy side by hand: the hard side's sockets all ping the easy side's
// public address; the easy side answers one of them, and its QUIC dial to that socket becomes the
// hard side's direct link, which carries packets.
func TestBirthdayHardSide(t *testing.T) {
	h, e, public, others, done := startHardSide(t)

	// Every socket pings, each from a port of its own, signed by the hard side for the easy side.
	sources := map[netip.AddrPort]bool{}
	for c, n := range others {
		maps.Copy(sources, pingSources(t, c, h, e, n))
	}
	var winner netip.AddrPort
	for a := range pingSources(t, public, h, e, 1) {
		winner = a
		sources[a] = true
	}
	if len(sources) != birthdaySockets {
		t.Fatalf("%d sockets pinged, want %d each from a port of its own", len(sources), birthdaySockets)
	}
	// A ping from the easy side reaches the socket that pings it: it answers with a pong.
	tx := txID{1, 2, 3}
	if _, err := public.WriteToUDPAddrPort(appendProbe(nil, e.id, kindPing, e.key, h.key, tx, netip.AddrPort{}), winner); err != nil {
		t.Fatal(err)
	}
	awaitPong(t, public, winner, tx, e)
	// The easy side dials that socket; the hard side accepts it as its direct link.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := e.ep.dial(ctx, h.key, PathDirect, winner)
	if r.err != nil {
		t.Fatalf("dial the winning socket: %v", r.err)
	}
	if !e.ep.install(h.key, r.conn, PathDirect, true) {
		t.Fatal("install")
	}
	if err := <-done; err != nil {
		t.Fatalf("hard side: %v", err)
	}
	sendUntil(t, e, h, []byte("over the birthday socket"))
	sendUntil(t, h, e, []byte("and back"))
	if st := h.ep.Status(e.key); st.Path != PathDirect {
		t.Errorf("hard side's path: %+v, want direct", st)
	}
	// The losing sockets are closed: a packet to one of them is refused (ICMP port unreachable).
	buf := make([]byte, 64)
	for a := range sources {
		if a == winner {
			continue
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c.Read(buf)
		c.Close()
		if err == nil || !isRefused(err) {
			t.Errorf("losing socket %v still open (read: %v)", a, err)
		}
		break
	}
}

// TestBirthdayOneWayHit: a signed ping that reaches a hard-side socket from an address other than
// the one that socket pings (between two sequential NATs: an earlier probe of the spray, from the
// wrong port) is a path one way only. The socket neither answers it nor ends the attempt, and a
// ping from its own target, later, still wins.
func TestBirthdayOneWayHit(t *testing.T) {
	h, e, public, _, _ := startHardSide(t)
	var socket netip.AddrPort
	for a := range pingSources(t, public, h, e, 1) {
		socket = a
	}
	elsewhere, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()
	// Both pings are the easy side's, validly signed; only the source differs. The socket reads them
	// in this order, so a pong to the first would be written before the pong to the second.
	tx := txID{9}
	for _, c := range []*net.UDPConn{elsewhere, public} {
		if _, err := c.WriteToUDPAddrPort(appendProbe(nil, e.id, kindPing, e.key, h.key, tx, netip.AddrPort{}), socket); err != nil {
			t.Fatal(err)
		}
	}
	awaitPong(t, public, socket, tx, e)
	buf := make([]byte, 2048)
	elsewhere.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, from, err := elsewhere.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("the socket answered a ping from an address it does not ping (%d bytes from %v)", n, from)
	}
}

func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && errors.Is(op.Err, syscall.ECONNREFUSED)
}

// TestSprayAcceptsAnyPort: a pong to a sprayed ping counts from any port of the sprayed address (the
// port is what the spray was guessing), not from another address; it makes the easy side dial there.
func TestSprayAcceptsAnyPort(t *testing.T) {
	e, h := newTestNode(t), newTestNode(t)
	e.ep.SetPeers([]Info{{Key: h.key}})
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	from := unmapped(raw.LocalAddr().(*net.UDPAddr).AddrPort())
	tx := txID{7}
	e.ep.mu.Lock()
	ps := e.ep.peers[h.key]
	ps.pending[tx] = pendingPing{to: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 0), sent: time.Now(), spray: true}
	e.ep.mu.Unlock()
	pong := appendProbe(nil, h.id, kindPong, h.key, e.key, tx, netip.AddrPort{})

	e.ep.handleProbe(pong, from) // another address than the sprayed one
	e.ep.mu.RLock()
	got := ps.sprayHit
	e.ep.mu.RUnlock()
	if got.IsValid() {
		t.Fatalf("a pong from %v counted for a spray at 127.0.0.2", from)
	}
	e.ep.mu.Lock()
	ps.pending[tx] = pendingPing{to: netip.AddrPortFrom(from.Addr(), 0), sent: time.Now(), spray: true}
	e.ep.mu.Unlock()
	e.ep.handleProbe(pong, from)
	e.ep.mu.RLock()
	got, valid := ps.sprayHit, ps.validated
	e.ep.mu.RUnlock()
	if got != from || valid != from {
		t.Fatalf("spray hit %v, validated %v; want both %v", got, valid, from)
	}
}

// TestSprayPairedDials: between two sequential NATs the spraying side sprays from a socket of its
// own (not the node's: see sprayPaired), takes the pong from any port of the sprayed address, and
// dials the peer from that socket; the hard side (here a socket played by hand, then accepting) gets
// the link.
func TestSprayPairedDials(t *testing.T) {
	e, h := newUDPTestNode(t), newUDPTestNode(t)
	e.ep.SetPeers([]Info{{Key: h.key}})
	h.ep.SetPeers([]Info{{Key: e.key}})
	hard, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hardAddr := unmapped(hard.LocalAddr().(*net.UDPAddr).AddrPort())
	sprayed := make(chan error, 1)
	go func() {
		sprayed <- e.ep.sprayPaired(ctx, h.key, hardAddr.Addr(), []uint16{hardAddr.Port() - 1, hardAddr.Port(), hardAddr.Port() + 1})
	}()

	buf := make([]byte, 2048)
	hard.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, from, err := hard.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no probe from the spray: %v", err)
	}
	from = unmapped(from)
	p, err := parseProbe(buf[:n])
	if err != nil || p.kind != kindPing || p.from != e.key || !p.verify(h.key) {
		t.Fatalf("not a signed ping from the spraying side: %v %+v", err, p)
	}
	if from == e.ep.LocalAddr() {
		t.Fatalf("the spray left from the node's own socket %v", from)
	}
	hard.SetReadDeadline(time.Time{})
	if _, err := hard.WriteToUDPAddrPort(appendProbe(nil, h.id, kindPong, h.key, e.key, p.tx, from), from); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() { accepted <- h.ep.acceptOn(ctx, e.key, hard) }()
	if err := <-sprayed; err != nil {
		t.Fatalf("spraying side: %v", err)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("hard side: %v", err)
	}
	sendUntil(t, e, h, []byte("dialed from the spray's socket"))
	sendUntil(t, h, e, []byte("and back"))
	if st := e.ep.Status(h.key); st.Path != PathDirect {
		t.Errorf("spraying side's path: %+v, want direct", st)
	}
}

// TestHardSocketBudget: attempts with many hard-NAT peers at once share a bounded number of
// sockets; one that would get only a handful does not start.
func TestHardSocketBudget(t *testing.T) {
	h, e := newTestNode(t), newTestNode(t)
	for i := range maxHardSockets / birthdaySockets {
		if n := h.ep.reserveHardSockets(birthdaySockets); n != birthdaySockets {
			t.Fatalf("attempt %d got %d sockets", i, n)
		}
	}
	if n := h.ep.reserveHardSockets(birthdaySockets); n != 0 {
		t.Fatalf("beyond the budget: %d sockets", n)
	}
	h.ep.hardSocks.Add(-100)
	if n := h.ep.reserveHardSockets(birthdaySockets); n != 100 {
		t.Fatalf("got %d of the 100 left", n)
	}
	short := int32(maxHardSockets - birthdaySockets/4 + 1) // one socket short of a quarter attempt left
	h.ep.hardSocks.Store(short)
	err := h.ep.openMany(context.Background(), e.key, hardTargets(netip.MustParseAddrPort("127.0.0.1:9"), nil, nil))
	if err == nil || !strings.Contains(err.Error(), "other peers") {
		t.Fatalf("openMany with %d sockets left: %v", maxHardSockets-h.ep.hardSocks.Load(), err)
	}
	if used := h.ep.hardSocks.Load(); used != short {
		t.Fatalf("a refused attempt kept sockets: %d in use", used)
	}
}

// TestBirthdayHardSideDials: when one of the hard side's own pings is answered (it crossed the easy
// side's NAT through a mapping left open, so the easy side saw a ping, not a spray hit, and will not
// dial), the hard side dials the easy side from that socket.
func TestBirthdayHardSideDials(t *testing.T) {
	h, e := newUDPTestNode(t), newUDPTestNode(t)
	h.ep.SetPeers([]Info{{Key: e.key}})
	e.ep.SetPeers([]Info{{Key: h.key}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The easy side's socket is the sockets' target (its NAT let the pings in): it answers the
	// pings as pings, from the address they went to.
	if err := h.ep.openMany(ctx, e.key, hardTargets(e.ep.LocalAddr(), nil, nil)); err != nil {
		t.Fatalf("hard side: %v", err)
	}
	sendUntil(t, h, e, []byte("dialed from the birthday socket"))
	sendUntil(t, e, h, []byte("and back"))
	if st := h.ep.Status(e.key); st.Path != PathDirect {
		t.Errorf("hard side's path: %+v, want direct", st)
	}
}
