package peer

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/backoff"
)

// Path decisions from tables, in virtual time: each step sets what changed in the peer's state, runs
// one turn at its time and checks the turn's actions and when it wants to run next.

var (
	addrA = netip.MustParseAddrPort("198.51.100.1:4000")
	addrB = netip.MustParseAddrPort("198.51.100.2:5000")
)

type pathStep struct {
	at   time.Duration // since the start
	ev   pathEvent
	set  func(v *pathView) // what changed in the peer's state since the last turn; nil = nothing
	want pathActions
	wake time.Duration // the next turn, since the start
	// then checks the view the turn leaves (what the loop writes back); nil = nothing to check
	then func(t *testing.T, v *pathView)
}

// newTestPath is newPathState with a ping schedule without jitter, so the schedule is exact.
func newTestPath(dialer bool, t0 time.Time) *pathState {
	s := newPathState(dialer, time.Second, 0, t0)
	s.pingEvery = backoff.NewSteady(pingMin, pingMax)
	return s
}

func runPath(t *testing.T, s *pathState, v *pathView, t0 time.Time, steps []pathStep) {
	t.Helper()
	for i, st := range steps {
		if st.set != nil {
			st.set(v)
		}
		a, wake := s.next(st.ev, v, t0.Add(st.at))
		what := fmt.Sprintf("step %d (at %v, event %d)", i, st.at, st.ev.kind)
		if a != st.want {
			t.Fatalf("%s: actions %+v, want %+v", what, a, st.want)
		}
		if got := wake.Sub(t0); got != st.wake {
			t.Fatalf("%s: next turn at %v, want %v", what, got, st.wake)
		}
		if st.then != nil {
			st.then(t, v)
		}
	}
}

var (
	timer  = pathEvent{kind: evTimer}
	wake   = pathEvent{kind: evWake}
	dialed = pathEvent{kind: evDialed}
	ping   = pathActions{ping: true}
	none   = pathActions{}
	toRely = pathActions{dial: PathRelay}
)

func withLink(l *link) func(v *pathView) {
	return func(v *pathView) { v.link, v.direct = l, l != nil && l.path == PathDirect }
}

func wantValidated(want netip.AddrPort) func(t *testing.T, v *pathView) {
	return func(t *testing.T, v *pathView) {
		t.Helper()
		if v.validated != want {
			t.Fatalf("validated %v, want %v", v.validated, want)
		}
	}
}

// TestPathRelayThenDirect: the dialer pings at once and then less and less often, dials through the
// relay after RelayDelay, pings the relayed peer four times more slowly, and upgrades to a direct
// link as soon as an address answers.
func TestPathRelayThenDirect(t *testing.T) {
	t0 := time.Unix(1000, 0)
	relayed, direct := &link{path: PathRelay}, &link{path: PathDirect}
	v := &pathView{online: true, relaying: true}
	runPath(t, newTestPath(true, t0), v, t0, []pathStep{
		{at: 0, ev: timer, want: ping, wake: 200 * time.Millisecond},
		{at: 200 * time.Millisecond, ev: timer, want: ping, wake: 600 * time.Millisecond},
		{at: 600 * time.Millisecond, ev: timer, want: ping, wake: time.Second}, // the next ping at 1.4 s; the relay is due first
		{at: 999 * time.Millisecond, ev: wake, want: none, wake: time.Second},
		{at: time.Second, ev: timer, want: toRely, wake: 1400 * time.Millisecond},
		{at: 1400 * time.Millisecond, ev: timer, want: ping, wake: 3 * time.Second}, // dialing: no second dial
		{at: 1500 * time.Millisecond, ev: dialed, set: withLink(relayed), want: none, wake: 3 * time.Second},
		{at: 3 * time.Second, ev: timer, want: ping, wake: 3*time.Second + 4*3200*time.Millisecond}, // relayed: 4× slower
		{at: 4 * time.Second, ev: wake, set: func(v *pathView) { v.validated = addrA },
			want: pathActions{dial: PathDirect, dialAddr: addrA}, wake: 3*time.Second + 4*3200*time.Millisecond},
		{at: 4500 * time.Millisecond, ev: dialed, set: func(v *pathView) { v.link, v.direct, v.sendsTo = direct, true, addrA }, want: none, wake: 5 * time.Second}, // a direct link: checked on every whole second (nextTick)
		{at: 5 * time.Second, ev: timer, want: none, wake: 6 * time.Second},
	})
}

// TestPathPingBackoff: the search's pings back off from 200 ms to 5 s, with jitter (±25%).
func TestPathPingBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newPathState(false, time.Second, 0, t0)
	v := &pathView{online: true}
	now := t0
	for i, ms := range []time.Duration{200, 400, 800, 1600, 3200, 5000, 5000} {
		d := ms * time.Millisecond
		a, wakeAt := s.next(timer, v, now)
		if !a.ping {
			t.Fatalf("turn %d: no ping", i)
		}
		if got := wakeAt.Sub(now); got < d*3/4 || got > d*5/4 {
			t.Fatalf("turn %d: next ping after %v, want %v ±25%%", i, got, d)
		}
		if a, w := s.next(timer, v, wakeAt.Add(-time.Millisecond)); a.ping || w != wakeAt {
			t.Fatalf("turn %d: a turn before the ping is due: %+v, next at %v", i, a, w.Sub(now))
		}
		now = wakeAt
	}
}

// TestPathWhoDials: only the dialer (the lower key) dials, directly or through the relay; the other
// side dials only an address its own spray found (whatever the key order).
func TestPathWhoDials(t *testing.T) {
	t0 := time.Unix(1000, 0)
	v := &pathView{online: true, relaying: true}
	runPath(t, newTestPath(false, t0), v, t0, []pathStep{
		{at: 0, ev: timer, want: ping, wake: 200 * time.Millisecond},
		{at: 200 * time.Millisecond, ev: timer, want: ping, wake: 600 * time.Millisecond},
		{at: 600 * time.Millisecond, ev: timer, want: ping, wake: 1400 * time.Millisecond}, // no relay wait
		{at: 1400 * time.Millisecond, ev: timer, want: ping, wake: 3 * time.Second},
		{at: 1500 * time.Millisecond, ev: wake, set: func(v *pathView) { v.validated = addrA }, want: none, wake: 3 * time.Second},
		{at: 1600 * time.Millisecond, ev: wake, set: func(v *pathView) { v.validated, v.sprayHit = addrB, addrB },
			want: pathActions{dial: PathDirect, dialAddr: addrB}, wake: 3 * time.Second},
	})
}

// TestPathDirectOff: with direct paths off nothing is pinged and the dialer goes through the relay
// after RelayDelay.
func TestPathDirectOff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	v := &pathView{online: true, relaying: true, noDirect: true, validated: addrA}
	runPath(t, newTestPath(true, t0), v, t0, []pathStep{
		{at: 0, ev: timer, want: none, wake: time.Second},
		{at: time.Second, ev: timer, want: toRely, wake: time.Second + idleWake},
	})
}

// TestPathDialFailed: a failed direct dial forgets the address it tried; a failed relay dial is
// retried at once.
func TestPathDialFailed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	v := &pathView{online: true, relaying: true}
	runPath(t, newTestPath(true, t0), v, t0, []pathStep{
		{at: 0, ev: timer, set: func(v *pathView) { v.validated, v.sprayHit = addrA, addrA },
			want: pathActions{ping: true, dial: PathDirect, dialAddr: addrA}, wake: 200 * time.Millisecond},
		{at: 100 * time.Millisecond, ev: pathEvent{kind: evDialed, path: PathDirect, addr: addrA, failed: true},
			want: none, wake: 200 * time.Millisecond, then: func(t *testing.T, v *pathView) {
				if v.validated.IsValid() || v.sprayHit.IsValid() {
					t.Fatalf("the failed address is kept: validated %v, spray hit %v", v.validated, v.sprayHit)
				}
			}},
		{at: time.Second, ev: timer, want: pathActions{ping: true, dial: PathRelay}, wake: 1400 * time.Millisecond},
		{at: 1100 * time.Millisecond, ev: pathEvent{kind: evDialed, path: PathRelay, failed: true}, want: toRely, wake: 1400 * time.Millisecond},
	})
}

// TestPathStall: a direct link that sends without receiving for stallAfter is rechecked (its address
// forgotten, pings sent), and if no probe is answered within RelayDelay the dialer falls back to the
// relay. The loop wakes at each of those moments, not at the next directCheck tick after it. Rechecks
// repeat every pingTimeout while the stall lasts. The link here is a slow one (a probe timeout of
// 700 ms: stallAfter is stallMax); "fast path" has a LAN's, "between ticks" one whose stallAfter
// falls between two ticks.
func TestPathStall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := &link{path: PathDirect}
	sends := func(sent, recv uint64) func(v *pathView) {
		return func(v *pathView) { v.sent, v.recv = sent, recv }
	}
	recheck := pathActions{ping: true, recheck: true}
	fallback := pathActions{dial: PathRelay, fallback: true}
	start := func(v *pathView) {
		*v = pathView{online: true, relaying: true, link: l, direct: true, sendsTo: addrA, validated: addrA, sent: 10, recv: 10,
			pto: 700 * time.Millisecond}
	}
	// The link sends without an answer at 1 s: the look after a send comes directCheckBusy later,
	// and it is stalled 2 s after the turn that saw it, at 3 s.
	quiet := []pathStep{
		{at: 0, ev: timer, set: start, want: none, wake: time.Second},
		{at: time.Second, ev: timer, set: sends(12, 10), want: none, wake: 1250 * time.Millisecond},
		{at: 1250 * time.Millisecond, ev: timer, want: none, wake: 2 * time.Second},
		{at: 2 * time.Second, ev: timer, want: none, wake: 3 * time.Second},
		{at: 3 * time.Second, ev: timer, want: recheck, wake: 4 * time.Second, then: wantValidated(netip.AddrPort{})},
	}
	t.Run("fallback", func(t *testing.T) {
		runPath(t, newTestPath(true, t0), &pathView{}, t0, append(quiet,
			pathStep{at: 4 * time.Second, ev: timer, set: sends(18, 10), want: fallback, wake: 4250 * time.Millisecond}))
	})
	t.Run("not the dialer", func(t *testing.T) {
		runPath(t, newTestPath(false, t0), &pathView{}, t0, append(quiet,
			pathStep{at: 4 * time.Second, ev: timer, set: sends(18, 10), want: none, wake: 4250 * time.Millisecond}))
	})
	t.Run("probe answered", func(t *testing.T) {
		runPath(t, newTestPath(true, t0), &pathView{}, t0, append(quiet,
			pathStep{at: 3500 * time.Millisecond, ev: wake, set: func(v *pathView) { v.validated = addrA }, want: none, wake: 4 * time.Second},
			pathStep{at: 4 * time.Second, ev: timer, want: none, wake: 5 * time.Second}))
	})
	t.Run("no relay: rechecks every pingTimeout", func(t *testing.T) {
		steps := append(quiet, pathStep{at: 3 * time.Second, ev: wake, set: func(v *pathView) { v.relaying = false }, want: none, wake: 4 * time.Second})
		for at := 4 * time.Second; at < 8*time.Second; at += time.Second {
			steps = append(steps, pathStep{at: at, ev: timer, want: none, wake: at + time.Second})
		}
		steps = append(steps,
			pathStep{at: 8 * time.Second, ev: timer, want: none, wake: 9 * time.Second}, // 5 s since the last: not yet
			pathStep{at: 8001 * time.Millisecond, ev: timer, want: recheck, wake: 9 * time.Second})
		runPath(t, newTestPath(true, t0), &pathView{}, t0, steps)
	})
	t.Run("packets come back", func(t *testing.T) {
		runPath(t, newTestPath(true, t0), &pathView{}, t0, []pathStep{
			quiet[0], quiet[1], quiet[2],
			{at: 2 * time.Second, ev: timer, set: sends(12, 11), want: none, wake: 3 * time.Second},
			{at: 3 * time.Second, ev: timer, set: sends(14, 11), want: none, wake: 3250 * time.Millisecond},
			{at: 3250 * time.Millisecond, ev: timer, want: none, wake: 4 * time.Second},
			{at: 4 * time.Second, ev: timer, want: none, wake: 5 * time.Second}, // unanswered since 3 s: 1 s is no stall
			{at: 5 * time.Second, ev: timer, want: recheck, wake: 6 * time.Second},
		})
	})
	t.Run("fast path", func(t *testing.T) {
		// A probe timeout of 30 ms: stalled after stallMin (1 s), at 2 s.
		fast := func(v *pathView) { start(v); v.pto = 30 * time.Millisecond }
		runPath(t, newTestPath(true, t0), &pathView{}, t0, []pathStep{
			{at: 0, ev: timer, set: fast, want: none, wake: time.Second},
			quiet[1], quiet[2],
			{at: 2 * time.Second, ev: timer, want: recheck, wake: 3 * time.Second, then: wantValidated(netip.AddrPort{})},
			{at: 3 * time.Second, ev: timer, want: fallback, wake: 4 * time.Second},
		})
	})
	t.Run("between ticks", func(t *testing.T) {
		// A probe timeout of 500 ms: stallAfter 1.5 s, so the loop wakes at 2.5 s for the stall
		// and at 3.5 s, RelayDelay later, for the fallback.
		mid := func(v *pathView) { start(v); v.pto = 500 * time.Millisecond }
		runPath(t, newTestPath(true, t0), &pathView{}, t0, []pathStep{
			{at: 0, ev: timer, set: mid, want: none, wake: time.Second},
			quiet[1], quiet[2],
			{at: 2 * time.Second, ev: timer, want: none, wake: 2500 * time.Millisecond},
			{at: 2500 * time.Millisecond, ev: timer, want: recheck, wake: 3 * time.Second},
			{at: 3 * time.Second, ev: timer, want: none, wake: 3500 * time.Millisecond},
			{at: 3500 * time.Millisecond, ev: timer, want: fallback, wake: 4 * time.Second},
		})
	})
	t.Run("busy link goes dark", func(t *testing.T) {
		// Traffic both ways, looked at every directCheckBusy; the path goes dark just after the
		// look at 1 s. The look at 1.25 s still counts the packets that came in before the dark,
		// the one at 1.5 s sees packets go out unanswered: stalled at 2.5 s (a fast path), fallen
		// back at 3.5 s. A look once a second would see it at 3 s at the earliest.
		fast := func(v *pathView) { start(v); v.pto = 30 * time.Millisecond }
		steps := []pathStep{{at: 0, ev: timer, set: fast, want: none, wake: time.Second}}
		sent, recv := uint64(10), uint64(10)
		for at := time.Second; at <= 3500*time.Millisecond; at += directCheckBusy {
			sent += 2
			if at <= 1250*time.Millisecond {
				recv += 2
			}
			st := pathStep{at: at, ev: timer, set: sends(sent, recv), want: none, wake: at + directCheckBusy}
			switch at {
			case 2500 * time.Millisecond:
				st.want = recheck
			case 3500 * time.Millisecond:
				st.want = fallback
			}
			steps = append(steps, st)
		}
		runPath(t, newTestPath(true, t0), &pathView{}, t0, steps)
	})
	t.Run("endpoints changed", func(t *testing.T) {
		runPath(t, newTestPath(true, t0), &pathView{}, t0, []pathStep{
			quiet[0],
			{at: 500 * time.Millisecond, ev: wake, set: func(v *pathView) { v.recheck, v.validated = true, netip.AddrPort{} }, want: recheck, wake: time.Second,
				then: func(t *testing.T, v *pathView) {
					if v.recheck {
						t.Fatal("the recheck request is not consumed")
					}
				}},
		})
	})
}

// TestStallAfter: three probe timeouts, within stallMin and stallMax.
func TestStallAfter(t *testing.T) {
	for _, c := range []struct{ pto, want time.Duration }{
		{0, stallMin}, {30 * time.Millisecond, stallMin}, {500 * time.Millisecond, 1500 * time.Millisecond},
		{700 * time.Millisecond, stallMax}, {5 * time.Second, stallMax},
	} {
		if got := stallAfter(c.pto); got != c.want {
			t.Errorf("stallAfter(%v) = %v, want %v", c.pto, got, c.want)
		}
	}
}

// TestPathPeerMoved: when a direct link's peer answers at another address, the dialer follows it
// (aliasing the address when it dialed the link, moving the link otherwise); the other side waits.
func TestPathPeerMoved(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := &link{path: PathDirect}
	moved := func(canAlias bool) func(v *pathView) {
		return func(v *pathView) {
			*v = pathView{online: true, link: l, direct: true, sendsTo: addrA, validated: addrB, canAlias: canAlias}
		}
	}
	for _, c := range []struct {
		name     string
		dialer   bool
		canAlias bool
		want     pathActions
	}{
		{"dialed it", true, true, pathActions{follow: addrB}},
		{"accepted it", true, false, pathActions{dial: PathDirect, dialAddr: addrB}},
		{"not the dialer", false, true, none},
	} {
		t.Run(c.name, func(t *testing.T) {
			runPath(t, newTestPath(c.dialer, t0), &pathView{}, t0, []pathStep{
				{at: 0, ev: wake, set: moved(c.canAlias), want: c.want, wake: time.Second},
			})
		})
	}
}

// TestPathLinkDied: when the link dies the search starts afresh: the answered address is forgotten,
// pings start over from the fastest rate, and the relay is dialed RelayDelay after.
func TestPathLinkDied(t *testing.T) {
	t0 := time.Unix(1000, 0)
	relayed := &link{path: PathRelay}
	v := &pathView{online: true, relaying: true, link: relayed}
	runPath(t, newTestPath(true, t0), v, t0, []pathStep{
		{at: 0, ev: timer, want: ping, wake: 4 * pingMin},
		{at: 800 * time.Millisecond, ev: timer, want: ping, wake: 800*time.Millisecond + 4*400*time.Millisecond},
		{at: 2 * time.Second, ev: wake, set: func(v *pathView) { v.link, v.validated = nil, addrA },
			want: ping, wake: 2200 * time.Millisecond, then: wantValidated(netip.AddrPort{})},
		{at: 2200 * time.Millisecond, ev: timer, want: ping, wake: 2600 * time.Millisecond},
		{at: 2600 * time.Millisecond, ev: timer, want: ping, wake: 3 * time.Second},
		{at: 3 * time.Second, ev: timer, want: toRely, wake: 3400 * time.Millisecond},
	})
}

// TestPathBirthdaySchedule: birthday attempts start RelayDelay after the search starts and retry on
// a steady schedule (15 s doubling to 5 min, no jitter: both sides must stay in step); they start
// over when a direct path is lost, and stop once an address answers.
func TestPathBirthdaySchedule(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newPathState(false, time.Second, 0, t0) // jittered pings must not move the attempts
	v := &pathView{online: true, role: "easy", public: addrB}
	attempts := func(from, until time.Duration) []time.Duration {
		var got []time.Duration
		for now := t0.Add(from); now.Sub(t0) < until; {
			a, wakeAt := s.next(timer, v, now)
			if a.birthday {
				got = append(got, now.Sub(t0))
			}
			now = wakeAt
		}
		return got
	}
	sec := func(ds ...int) []time.Duration {
		out := make([]time.Duration, len(ds))
		for i, d := range ds {
			out[i] = time.Duration(d) * time.Second
		}
		return out
	}
	if got, want := attempts(0, 1100*time.Second), sec(1, 16, 46, 106, 226, 466, 766, 1066); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("attempts at %v, want %v", got, want)
	}
	// A direct link (a spray hit), then it dies: attempts start over.
	direct := &link{path: PathDirect}
	v.link, v.direct, v.validated, v.sprayHit = direct, true, addrB, addrB
	if a, _ := s.next(wake, v, t0.Add(1100*time.Second)); a.birthday {
		t.Fatal("an attempt with a direct link up")
	}
	v.link, v.direct = nil, false
	s.next(wake, v, t0.Add(1200*time.Second))
	if v.validated.IsValid() || v.sprayHit.IsValid() {
		t.Fatalf("the spray's hit outlived the direct link: validated %v, spray hit %v", v.validated, v.sprayHit)
	}
	if got, want := attempts(1200*time.Second+time.Millisecond, 1300*time.Second), sec(1201, 1216, 1246); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the direct link died: attempts at %v, want %v", got, want)
	}
	// An answered address stops them; without a role there are none.
	v.validated = addrA
	if got := attempts(1300*time.Second, 2000*time.Second); len(got) != 0 {
		t.Fatalf("attempts with an answered address: %v", got)
	}
	v.validated, v.role = netip.AddrPort{}, ""
	if got := attempts(2000*time.Second, 3000*time.Second); len(got) != 0 {
		t.Fatalf("attempts without a role: %v", got)
	}
}

// TestPathDirectLost: when the direct link goes, the address that answered last is spent, whether a
// spray found it or a plain pong: the search pings again at once (and dials once an address
// answers), and birthday attempts may start again. A stale address kept here stopped the easy side of
// a birthday pair from ever spraying again after a NAT rebinding (TestNATMatrix, stop 24).
func TestPathDirectLost(t *testing.T) {
	t0 := time.Unix(1000, 0)
	direct := &link{path: PathDirect}
	up := func(validated, sprayHit netip.AddrPort) func(v *pathView) {
		return func(v *pathView) {
			*v = pathView{online: true, link: direct, direct: true, sendsTo: addrA, validated: validated, sprayHit: sprayHit}
		}
	}
	gone := func(v *pathView) { v.link, v.direct = nil, false }
	for _, c := range []struct {
		name     string
		dialer   bool
		sprayHit netip.AddrPort
	}{{"spray hit", false, addrA}, {"plain pong, dialer", true, addrB}, {"plain pong, other side", false, addrB}} {
		t.Run(c.name, func(t *testing.T) {
			runPath(t, newTestPath(c.dialer, t0), &pathView{}, t0, []pathStep{
				{at: 0, ev: timer, set: up(addrA, c.sprayHit), want: none, wake: time.Second},
				{at: 500 * time.Millisecond, ev: timer, set: gone, want: ping, wake: 700 * time.Millisecond,
					then: func(t *testing.T, v *pathView) {
						if v.validated.IsValid() || v.sprayHit.IsValid() {
							t.Fatalf("validated %v, spray hit %v; want both forgotten", v.validated, v.sprayHit)
						}
					}},
			})
		})
	}
}

// TestPathUDPBlocked: a node that reaches a server over TCP dials the relay at once, also when the
// other side would dial, and still pings; an address that answers is left to the dialer.
func TestPathUDPBlocked(t *testing.T) {
	t0 := time.Unix(1000, 0)
	v := &pathView{online: true, relaying: true, udpBlocked: true}
	runPath(t, newTestPath(false, t0), v, t0, []pathStep{
		{at: 0, ev: timer, want: pathActions{ping: true, dial: PathRelay}, wake: 200 * time.Millisecond},
		{at: 100 * time.Millisecond, ev: dialed, set: withLink(&link{path: PathRelay}), want: none, wake: 200 * time.Millisecond},
		{at: 200 * time.Millisecond, ev: timer, want: ping, wake: 200*time.Millisecond + 4*400*time.Millisecond},
		{at: 300 * time.Millisecond, ev: wake, set: func(v *pathView) { v.validated = addrA }, want: none, wake: 200*time.Millisecond + 4*400*time.Millisecond},
	})
}

// TestNextTick: every caller wakes on the same whole multiples of d, at most d away, never now.
func TestNextTick(t *testing.T) {
	now := time.Now() // with a monotonic reading, which the result keeps
	for _, d := range []time.Duration{time.Second, 250 * time.Millisecond} {
		for _, off := range []time.Duration{0, time.Nanosecond, 123456789, d - 1} {
			at := now.Add(off)
			next := nextTick(at, d)
			if gap := next.Sub(at); gap <= 0 || gap > d || next.UnixNano()%int64(d) != 0 {
				t.Errorf("nextTick(%v, %v) = %v: %v later, want a multiple of d within (0, d]", at, d, next, gap)
			}
			if next == next.Round(0) {
				t.Errorf("nextTick(%v, %v) dropped the monotonic reading", at, d)
			}
		}
	}
}

// seconds is f seconds, for the idle tests' timelines.
func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// TestPathIdleWindsDown: a link that carries nothing for LinkIdle winds down, and nothing is sent
// or scheduled for the dormant peer until traffic wants it back; then the search starts afresh
// and, though this side is not the dialer, it dials the relay at once (the dormant peer is not
// punching), and pings for a direct path.
func TestPathIdleWindsDown(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newTestPath(false, t0)
	s.linkIdle = 10 * time.Second
	direct := &link{path: PathDirect}
	v := &pathView{online: true, relaying: true}
	runPath(t, s, v, t0, []pathStep{
		{at: 0, ev: wake, set: func(v *pathView) { v.link, v.direct, v.validated = direct, true, addrA }, want: none, wake: seconds(1)},
		{at: seconds(5), ev: timer, set: func(v *pathView) { v.used = 3 }, want: none, wake: seconds(6)},
		{at: seconds(14.5), ev: timer, want: none, wake: seconds(15)},
		{at: seconds(15), ev: timer, want: pathActions{sleep: true}, wake: seconds(15) + idleWake},
		{at: seconds(15.1), ev: wake, set: withLink(nil), want: none, wake: seconds(15.1) + idleWake},
		{at: seconds(600), ev: timer, want: none, wake: seconds(600) + idleWake},
		{at: seconds(601), ev: wake, set: func(v *pathView) { v.wanted = true }, want: pathActions{ping: true, dial: PathRelay}, wake: seconds(601.2),
			then: wantValidated(netip.AddrPort{})},
		{at: seconds(601.1), ev: dialed, set: func(v *pathView) { v.wanted, v.link = false, &link{path: PathRelay} }, want: none, wake: seconds(601.2)},
	})
	if s.dormant {
		t.Fatal("still dormant with a link up")
	}
}

// TestPathIdleKeepsBusyLinks: a link with a stream open stays up however long nothing moves, and
// without a relay to come back through no link winds down.
func TestPathIdleKeepsBusyLinks(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name string
		v    pathView
	}{
		{"a stream open", pathView{online: true, relaying: true, streams: 1}},
		{"no relay", pathView{online: true}},
	} {
		s := newTestPath(true, t0)
		s.linkIdle = 10 * time.Second
		v := c.v
		v.link, v.direct, v.validated, v.sendsTo = &link{path: PathDirect}, true, addrA, addrA
		for at := time.Duration(0); at <= time.Minute; at += time.Second {
			if a, _ := s.next(timer, &v, t0.Add(at)); a.sleep {
				t.Fatalf("%s: wound down after %v", c.name, at)
			}
		}
	}
}

// TestPathPeerSlept: when the peer closes the link as idle, this side goes dormant too (no pings,
// no relay dial), and leaves dormancy when the peer brings a new link.
func TestPathPeerSlept(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newTestPath(true, t0)
	relayed := &link{path: PathRelay}
	v := &pathView{online: true, relaying: true}
	runPath(t, s, v, t0, []pathStep{
		{at: 0, ev: wake, set: withLink(relayed), want: ping, wake: 4 * 200 * time.Millisecond},
		{at: time.Second, ev: wake, set: func(v *pathView) { v.link, v.peerSlept = nil, true }, want: none, wake: time.Second + idleWake},
		{at: 2 * time.Second, ev: timer, set: func(v *pathView) { v.peerSlept = false }, want: none, wake: 2*time.Second + idleWake},
		{at: 3 * time.Second, ev: wake, set: withLink(relayed), want: ping, wake: 3*time.Second + 4*200*time.Millisecond},
	})
	if s.dormant {
		t.Fatal("still dormant with the peer's link up")
	}
}

// TestPathHoldWakes: when the node loses its coord (HoldLinks) a dormant peer comes back without
// any traffic: the search restarts with pings (no relay dial: the coord's relay is gone with it),
// and while held an idle link does not wind down.
func TestPathHoldWakes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newTestPath(false, t0)
	s.linkIdle = 10 * time.Second
	v := &pathView{online: true, relaying: true}
	runPath(t, s, v, t0, []pathStep{
		{at: 0, ev: wake, set: withLink(&link{path: PathDirect}), want: none, wake: seconds(1)},
		{at: seconds(10), ev: timer, want: pathActions{sleep: true}, wake: seconds(10) + idleWake},
		{at: seconds(10.1), ev: wake, set: withLink(nil), want: none, wake: seconds(10.1) + idleWake},
		{at: seconds(100), ev: wake, set: func(v *pathView) { v.hold, v.relaying = true, false }, want: ping, wake: seconds(100.2)},
		{at: seconds(100.1), ev: wake, set: withLink(&link{path: PathDirect}), want: none, wake: seconds(101)},
	})
	for at := seconds(101); at <= seconds(200); at += time.Second {
		if a, _ := s.next(timer, v, t0.Add(at)); a.sleep {
			t.Fatalf("wound down at %v while the coord is lost", at)
		}
	}
}

// TestPathWakeWhileClosing: traffic that wants the link back while the one just wound down is still
// closing wakes the peer as if it were gone: the relay dial goes out at once (the peer, dormant, will
// not dial), instead of the search waiting for a link that is closing.
func TestPathWakeWhileClosing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newTestPath(false, t0)
	s.linkIdle = 10 * time.Second
	closing := &link{path: PathDirect}
	v := &pathView{online: true, relaying: true}
	runPath(t, s, v, t0, []pathStep{
		{at: 0, ev: wake, set: withLink(closing), want: none, wake: seconds(1)},
		{at: seconds(10), ev: timer, want: pathActions{sleep: true}, wake: seconds(10) + idleWake},
		{at: seconds(10.01), ev: wake, set: func(v *pathView) { v.wanted = true }, want: pathActions{ping: true, dial: PathRelay}, wake: seconds(10.21)},
	})
}
