package peer

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	relay1 = netip.MustParseAddrPort("192.0.2.1:7401")
	relay2 = netip.MustParseAddrPort("192.0.2.2:7401")
	relay3 = netip.MustParseAddrPort("192.0.2.3:7400") // the coord, last
)

func routeOf(p *relayPaths, k Key, now time.Time) []netip.AddrPort {
	var to [maxRelays]netip.AddrPort
	n := p.route(k, now, &to)
	return slices.Clone(to[:n])
}

func wantRoute(t *testing.T, what string, p *relayPaths, k Key, now time.Time, want ...netip.AddrPort) {
	t.Helper()
	if got := routeOf(p, k, now); !slices.Equal(got, want) {
		t.Fatalf("%s: route %v, want %v", what, got, want)
	}
}

func TestRelayPathChoice(t *testing.T) {
	var p relayPaths
	k := Key{1}
	t0 := time.Now()
	wantRoute(t, "no relay", &p, k, t0)
	p.set([]netip.AddrPort{relay1, relay2, relay3})
	wantRoute(t, "never heard from the peer", &p, k, t0, relay1, relay2, relay3)

	p.heard(k, relay3, t0)
	wantRoute(t, "heard through relay 3", &p, k, t0, relay3)
	p.heard(k, relay2, t0)
	wantRoute(t, "then through the better relay 2", &p, k, t0, relay2)
	if got := p.current(k); got != relay2 {
		t.Fatalf("current = %v, want relay 2", got)
	}

	// Unanswered through relay 2 for doubtAfter: through all relays until relay 2 answers; a packet
	// through the worse relay 3 is no answer, and moves us there only once we are in doubt.
	t1 := t0.Add(time.Minute)
	p.heard(k, relay2, t1)
	wantRoute(t, "first send since: a probe of relay 1, due", &p, k, t1, relay1, relay2, relay3)
	wantRoute(t, "second send", &p, k, t1, relay2)
	p.heard(k, relay3, t1.Add(doubtAfter))
	wantRoute(t, "a packet through relay 3 before any doubt", &p, k, t1.Add(doubtAfter), relay2)
	wantRoute(t, "unanswered for doubtAfter", &p, k, t1.Add(doubtAfter+time.Millisecond), relay1, relay2, relay3)
	wantRoute(t, "still unanswered", &p, k, t1.Add(2*doubtAfter), relay1, relay2, relay3)
	p.heard(k, relay2, t1.Add(2*doubtAfter))
	wantRoute(t, "answered through relay 2", &p, k, t1.Add(2*doubtAfter), relay2)

	t2 := t1.Add(time.Minute)
	wantRoute(t, "sent since relay 2 last delivered, a minute ago", &p, k, t2, relay1, relay2, relay3)
	p.heard(k, relay3, t2)
	wantRoute(t, "in doubt, relay 3 delivers", &p, k, t2, relay3)
	p.heard(k, relay1, t2)
	wantRoute(t, "relay 1 delivers", &p, k, t2, relay1)

	// Our login to the peer's relay ends: through all the others.
	t3 := t2.Add(time.Minute)
	p.heard(k, relay1, t3)
	p.set([]netip.AddrPort{relay2, relay3})
	wantRoute(t, "our login to the peer's relay ended", &p, k, t3, relay2, relay3)
	if got := p.current(k); got.IsValid() {
		t.Fatalf("current = %v through a relay we left", got)
	}
	p.heard(k, relay3, t3)
	wantRoute(t, "heard through relay 3", &p, k, t3, relay3)

	// Not on the first relay we are logged in to: every probeEvery, one packet through all.
	p.set([]netip.AddrPort{relay1, relay3})
	wantRoute(t, "relay 1 is back", &p, k, t3, relay3)
	p.heard(k, relay3, t3.Add(probeEvery))
	wantRoute(t, "probeEvery after moving to relay 3", &p, k, t3.Add(probeEvery), relay1, relay3)
	wantRoute(t, "after the probe", &p, k, t3.Add(probeEvery), relay3)
	p.heard(k, relay3, t3.Add(probeEvery))
	wantRoute(t, "before the next probe", &p, k, t3.Add(2*probeEvery-time.Millisecond), relay3)
	wantRoute(t, "the next probe", &p, k, t3.Add(2*probeEvery), relay1, relay3)
	p.heard(k, relay1, t3.Add(2*probeEvery))
	wantRoute(t, "the peer answers through relay 1", &p, k, t3.Add(2*probeEvery), relay1)
	p.heard(k, relay1, t3.Add(4*probeEvery))
	wantRoute(t, "on the first relay: no probes", &p, k, t3.Add(4*probeEvery), relay1)

	// A peer that leaves is forgotten.
	p.retain(func(Key) bool { return false })
	wantRoute(t, "a forgotten peer", &p, k, t3.Add(4*probeEvery), relay1, relay3)
}

// relaySim is two nodes and the relays between them, in virtual time: a relay forwards a packet only
// if it is up and both nodes are logged in to it, as coord/relay.Server does.
type relaySim struct {
	t          *testing.T
	now        time.Time
	up         map[netip.AddrPort]bool
	a, b       *simNode
	deliveries map[netip.AddrPort]int // packets delivered through each relay
	forger     netip.AddrPort         // a relay that forges a frame from each node to the other every tick
}

type simNode struct {
	key    Key
	paths  relayPaths
	logins []netip.AddrPort // the relays it is logged in to, best first
}

func (n *simNode) login(relays ...netip.AddrPort) {
	n.logins = relays
	n.paths.set(relays)
}

// send sends one packet from one node to the other and reports whether it arrived.
func (s *relaySim) send(from, to *simNode) bool {
	ok := false
	for _, r := range routeOf(&from.paths, to.key, s.now) {
		if s.up[r] && slices.Contains(from.logins, r) && slices.Contains(to.logins, r) {
			to.paths.heard(from.key, r, s.now)
			s.deliveries[r]++
			ok = true
		}
	}
	return ok
}

// exchange runs a request and its answer (when the request arrives) every 10 ms for d, and returns
// when the first round trip that failed and the last that did were, relative to its start (0, 0 = all
// succeeded).
func (s *relaySim) exchange(d time.Duration) (firstFail, lastFail time.Duration) {
	start := s.now
	failed := false
	for end := s.now.Add(d); s.now.Before(end); s.now = s.now.Add(10 * time.Millisecond) {
		if s.forger.IsValid() {
			s.a.paths.heard(s.b.key, s.forger, s.now)
			s.b.paths.heard(s.a.key, s.forger, s.now)
		}
		if s.send(s.a, s.b) && s.send(s.b, s.a) {
			continue
		}
		if !failed {
			firstFail, failed = s.now.Sub(start), true
		}
		lastFail = s.now.Sub(start)
	}
	return firstFail, lastFail
}

func newRelaySim(t *testing.T) *relaySim {
	return &relaySim{t: t, now: time.Now(), up: map[netip.AddrPort]bool{relay1: true, relay2: true, relay3: true},
		a: &simNode{key: Key{0xa}}, b: &simNode{key: Key{0xb}}, deliveries: make(map[netip.AddrPort]int)}
}

// TestRelayPathFailover: two peers settle on the first relay both are logged in to, move to the next
// within two doubtAfter of its death (before either login notices), stay there when it comes back
// until both are logged in to it again, then move back to it.
func TestRelayPathFailover(t *testing.T) {
	s := newRelaySim(t)
	s.a.login(relay1, relay2, relay3)
	s.b.login(relay1, relay2, relay3)
	if first, _ := s.exchange(time.Second); first != 0 {
		t.Fatalf("round trips failed from %v on with every relay up", first)
	}
	if s.a.paths.current(s.b.key) != relay1 || s.b.paths.current(s.a.key) != relay1 {
		t.Fatalf("settled on %v / %v, want relay 1", s.a.paths.current(s.b.key), s.b.paths.current(s.a.key))
	}
	s.deliveries = map[netip.AddrPort]int{}

	s.up[relay1] = false // dies; the logins have not noticed yet
	_, last := s.exchange(5 * time.Second)
	t.Logf("relay 1 died: round trips failed for %v", last)
	if last == 0 || last > 2*doubtAfter+100*time.Millisecond {
		t.Fatalf("round trips failed until %v after relay 1 died, want some, and none after %v", last, 2*doubtAfter)
	}
	if s.a.paths.current(s.b.key) != relay2 || s.b.paths.current(s.a.key) != relay2 {
		t.Fatalf("moved to %v / %v, want relay 2", s.a.paths.current(s.b.key), s.b.paths.current(s.a.key))
	}
	if n := s.deliveries[relay3]; n > 10 {
		t.Errorf("the last resort carried %d packets while relay 2 was up", n)
	}

	// The logins notice, at different times; nothing changes for the link.
	s.a.login(relay2, relay3)
	s.exchange(time.Second)
	s.b.login(relay2, relay3)
	if first, _ := s.exchange(time.Second); first != 0 {
		t.Fatalf("round trips failed as the logins noticed (from %v on)", first)
	}

	// Relay 1 comes back; a logs in first (its probes through relay 1 reach nobody: the link stays on
	// relay 2), then b: the next probe through relay 1 moves both.
	s.up[relay1] = true
	s.a.login(relay1, relay2, relay3)
	if first, _ := s.exchange(probeEvery + time.Second); first != 0 {
		t.Fatalf("round trips failed after a logged in to relay 1 again (from %v on)", first)
	}
	if got := s.a.paths.current(s.b.key); got != relay2 {
		t.Fatalf("a moved to %v before b logged in to relay 1", got)
	}
	s.b.login(relay1, relay2, relay3)
	if first, _ := s.exchange(probeEvery + time.Second); first != 0 {
		t.Fatalf("round trips failed after b logged in to relay 1 again (from %v on)", first)
	}
	if s.a.paths.current(s.b.key) != relay1 || s.b.paths.current(s.a.key) != relay1 {
		t.Fatalf("back on %v / %v, want relay 1", s.a.paths.current(s.b.key), s.b.paths.current(s.a.key))
	}
}

// TestRelayPathPartial: a relay refuses one side (its address is blocked there, or it is full): the
// pair meets on the first relay both are logged in to, whoever speaks first.
func TestRelayPathPartial(t *testing.T) {
	for _, aFirst := range []bool{true, false} {
		s := newRelaySim(t)
		s.a.login(relay1, relay2, relay3)
		s.b.login(relay2, relay3)
		if !aFirst {
			s.a, s.b = s.b, s.a
		}
		if first, _ := s.exchange(time.Second); first != 0 {
			t.Fatalf("round trips failed from %v on", first)
		}
		if s.a.paths.current(s.b.key) != relay2 || s.b.paths.current(s.a.key) != relay2 {
			t.Fatalf("met on %v / %v, want relay 2", s.a.paths.current(s.b.key), s.b.paths.current(s.a.key))
		}
	}
}

// TestRelayPathForgery: the last relay forges frames "from" each peer to the other and forwards
// nothing. The pair stays on relay 1; when relay 1 dies the forger may catch the failing link, but
// the next probe through relay 2 takes it there.
func TestRelayPathForgery(t *testing.T) {
	s := newRelaySim(t)
	s.a.login(relay1, relay2, relay3)
	s.b.login(relay1, relay2, relay3)
	s.up[relay3], s.forger = false, relay3
	if first, _ := s.exchange(2 * time.Second); first != 0 {
		t.Fatalf("round trips failed from %v on, with the forger about", first)
	}
	s.up[relay1] = false
	_, last := s.exchange(3 * probeEvery)
	t.Logf("relay 1 died, the forger about: round trips failed for %v", last)
	if bound := 2*doubtAfter + probeEvery + 100*time.Millisecond; last == 0 || last > bound {
		t.Fatalf("round trips failed until %v after relay 1 died, want some, and none after %v", last, bound)
	}
	if s.a.paths.current(s.b.key) != relay2 || s.b.paths.current(s.a.key) != relay2 {
		t.Fatalf("moved to %v / %v, want relay 2", s.a.paths.current(s.b.key), s.b.paths.current(s.a.key))
	}
}
