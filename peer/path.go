package peer

import (
	"net/netip"
	"time"

	"github.com/warren-net/warren/internal/backoff"
)

// Path finding as a state machine. peerLoop (punch.go) owns one pathState per peer and does the
// I/O; every decision is made here, by next, from the state carried between turns, the peer's
// shared state read at that moment (a pathView) and the time passed in. next does no I/O and reads
// no clock, so its decisions are tested from tables (path_test.go).
//
// Each turn handles one event (a small handler per event, as in wireguard-go's device/timers.go)
// and then decides what the peer needs now: stall detection on a direct link, the ping schedule
// while there is none, birthday attempts (birthday.go), and whether to dial, directly or through the
// relay. It returns the actions for the loop to carry out and when to be woken at the latest.

const (
	pingMin         = 200 * time.Millisecond // first ping interval while searching...
	pingMax         = 5 * time.Second        // ...doubling up to this (with jitter)
	relayedPingSlow = 4                      // pings to a relayed peer go this many times slower
	hardMin         = 15 * time.Second       // first birthday retry interval...
	hardMax         = 5 * time.Minute        // ...doubling up to this, without jitter
	directCheck     = time.Second            // how often a quiet direct link's counters are looked at...
	directCheckBusy = 250 * time.Millisecond // ...and one that sent since the last look (stall detection)
	idleWake        = time.Hour              // the wake-up when nothing is scheduled
)

// pathEvent is what woke the loop.
type pathEvent struct {
	kind   pathEventKind
	path   string         // evDialed: the dial's path
	addr   netip.AddrPort // evDialed: the address dialed directly
	failed bool           // evDialed: the dial failed
}

type pathEventKind int

const (
	evTimer  pathEventKind = iota // the wake-up time came (or the loop just started)
	evWake                        // the peer's state changed: endpoints, link up or down, a path answered
	evDialed                      // a dial ended (a successful one is installed before next runs)
)

// pathView is what a turn reads of the peer's shared state and of the Endpoint, taken under
// Endpoint.mu. The handlers may change validated, sprayHit and recheck; the loop writes them back in
// the same critical section.
type pathView struct {
	link     *link          // the current link; nil = none
	direct   bool           // link is a direct one
	online   bool           // the peer has endpoints
	public   netip.AddrPort // its public address (the first endpoint)
	role     string         // our birthday role with it (birthdayRole)
	noDirect bool           // direct paths are off
	relaying bool           // we are logged in to a relay
	// udpBlocked: we reach a server over TCP (tunnel.go), so UDP is likely blocked here: the relay is
	// dialed at once, whichever side would dial, while punching goes on.
	udpBlocked bool

	validated netip.AddrPort // peerState.validated
	sprayHit  netip.AddrPort // peerState.sprayHit
	recheck   bool           // peerState.recheck

	// Of the current link:
	sent, recv uint64         // its packet counters
	pto        time.Duration  // its QUIC probe timeout, from the RTT estimate (stallAfter)
	sendsTo    netip.AddrPort // where its packets go now (Endpoint.sendsTo)
	canAlias   bool           // we dialed it: its packets can be redirected (alias.go)
	used       uint64         // its traffic counter (link.used: packets and streams, no keep-alives)
	streams    int32          // its open streams

	wanted    bool // traffic for the peer arrived while it was dormant (idle.go)
	hold      bool // the node lost its coord: links stay up, dormant ones come back (HoldLinks)
	peerSlept bool // the peer closed the last link as idle
}

// pathActions is what a turn asks the loop to do, in this order.
type pathActions struct {
	ping     bool           // send a round of pings to every candidate address (sendPings)
	recheck  bool           // the ping rechecks a direct link (stalled, or the peer's endpoints changed)
	birthday bool           // start a birthday attempt in view.role towards view.public
	follow   netip.AddrPort // alias the link's remote address to this one (the peer roamed); zero = no
	dial     string         // dial on this path ("" = no dial)...
	dialAddr netip.AddrPort // ...to this address (PathDirect)
	fallback bool           // the relay dial replaces a stalled direct link
	sleep    bool           // close the link as idle (idle.go); no other action comes with it
}

// pathState is what path finding carries from one turn to the next.
type pathState struct {
	dialer     bool // our key is the lower: we dial
	relayDelay time.Duration
	linkIdle   time.Duration // Config.LinkIdle

	pingEvery *backoff.Backoff
	// Birthday attempts need both sides at once: they start from the same event (the peer
	// appearing, or the direct path failing) and retry on the same steady schedule (no jitter: with
	// it the two sides' retries drifted apart and the spray missed the hard side's sockets).
	hardEvery *backoff.Backoff
	nextPing  time.Time // zero: ping now
	searching time.Time // when the search for a path began
	nextHard  time.Time // the next birthday attempt
	wasDirect bool      // the last turn saw a direct link
	hadLink   bool      // the last turn saw a link
	dialing   bool      // a dial is under way

	// Stall detection on the direct link: packets went out at unanswered and nothing came back since.
	watched            *link
	lastRecv, lastSent uint64
	unanswered         time.Time
	recheckAt          time.Time
	stalled            bool

	// Winding down (idle.go): the link and traffic count last seen and since when it stood still;
	// dormant while wound down; waking from our own traffic until the next dial ends.
	useLink *link
	slept   *link // the link wound down last, until it is gone
	lastUse uint64
	usedAt  time.Time
	dormant bool
	waking  bool
}

func newPathState(dialer bool, relayDelay, linkIdle time.Duration, now time.Time) *pathState {
	return &pathState{
		dialer:     dialer,
		relayDelay: relayDelay,
		linkIdle:   linkIdle,
		pingEvery:  backoff.New(pingMin, pingMax),
		hardEvery:  backoff.NewSteady(hardMin, hardMax),
		searching:  now,
		nextHard:   now.Add(relayDelay),
	}
}

// next handles ev at now and decides the turn: the actions to carry out, and when to run the next
// turn if nothing else happens first.
func (s *pathState) next(ev pathEvent, v *pathView, now time.Time) (pathActions, time.Time) {
	switch ev.kind {
	case evWake:
		s.onWake(v, now)
	case evDialed:
		s.onDialed(ev, v)
	}
	return s.turn(v, now)
}

// onWake: if the link the last turn saw has died, the search starts afresh.
func (s *pathState) onWake(v *pathView, now time.Time) {
	if v.link != nil || !s.hadLink {
		return
	}
	s.restart(v, now)
}

// restart begins the search for a path afresh.
func (s *pathState) restart(v *pathView, now time.Time) {
	v.validated, v.sprayHit = netip.AddrPort{}, netip.AddrPort{}
	s.searching = now
	s.nextHard = now.Add(s.relayDelay)
	s.hardEvery.Reset()
	s.pingEvery.Reset()
	s.nextPing = time.Time{}
}

// onDialed: a failed direct dial forgets the address it tried.
func (s *pathState) onDialed(ev pathEvent, v *pathView) {
	s.dialing, s.waking = false, false
	if !ev.failed || ev.path != PathDirect {
		return
	}
	if v.validated == ev.addr {
		v.validated = netip.AddrPort{}
	}
	if v.sprayHit == ev.addr {
		v.sprayHit = netip.AddrPort{}
	}
}

// turn decides what the peer needs now.
func (s *pathState) turn(v *pathView, now time.Time) (a pathActions, wakeAt time.Time) {
	wakeAt = now.Add(idleWake)
	if s.rest(v, now) {
		return a, wakeAt
	}
	slept, idleAt := s.idle(v, now, &a)
	if slept {
		return a, wakeAt
	}
	if v.link != nil {
		s.waking = false
	}
	if s.wasDirect && !v.direct {
		s.directLost(v, now)
	}
	s.wasDirect, s.hadLink = v.direct, v.link != nil
	if v.direct && !v.noDirect {
		wakeAt = s.watch(v, now, &a)
	}
	if v.online && !v.direct && !v.noDirect {
		wakeAt = s.punch(v, now, &a)
	}
	s.keepDirect(v, now, &a)
	for _, t := range []time.Time{s.connect(v, now, &a), idleAt} {
		if !t.IsZero() && t.Before(wakeAt) {
			wakeAt = t
		}
	}
	return a, wakeAt
}

// nextTick returns the first multiple of d on the wall clock after now, keeping now's monotonic
// reading (so a clock step moves the phase, never the interval). Every peer's direct-link check wakes
// on the same ticks: an idle node with many peers then wakes once per d, not once per peer (measured
// with 9 peers: about 80 context switches a second before, 50 after; BENCHMARKS.md, "Idle cost").
func nextTick(now time.Time, d time.Duration) time.Time {
	return now.Add(d - time.Duration(now.UnixNano()%int64(d)))
}

// directLost: the direct path is gone; birthday attempts start over, and the address that answered
// last is spent, a spray's hit or not: it answered on the path that just failed. (Kept, it stopped
// the side it belonged to from ever trying the birthday technique again: after a NAT rebinding in
// TestNATMatrix the easy side still held an address its first, raced link had validated.)
func (s *pathState) directLost(v *pathView, now time.Time) {
	s.nextHard = now.Add(s.relayDelay)
	s.hardEvery.Reset()
	v.validated, v.sprayHit = netip.AddrPort{}, netip.AddrPort{}
}

// watch looks for a stall on the direct link (packets go out, nothing comes back for stallAfter)
// and rechecks the path, by probing again, when it stalls or the peer's endpoints changed. It returns
// when to look again: at the next directCheck tick, or directCheckBusy one while the link sends, or
// sooner when the stall's next step is due, the moment the link has been unanswered for stallAfter
// or, once it stalled, the moment the dialer may fall back to the relay (keepDirect). Each step used
// to wait for the next once-a-second look after it, a second or two in all (BENCHMARKS.md, "Changes
// of stop 38").
//
// The link's counters are read once per turn, so unanswered is the turn that first saw packets go out
// with nothing back: the packets left before it, so the link has been unanswered for at least
// now - unanswered, and reaching stallAfter is enough. The finer look while the link sends makes that
// turn come sooner after the path went dark; a quiet link keeps the coarse one, on the same ticks for
// every peer (nextTick).
func (s *pathState) watch(v *pathView, now time.Time, a *pathActions) (wakeAt time.Time) {
	busy := v.link == s.watched && v.sent != s.lastSent
	if s.watched != v.link || v.recv != s.lastRecv {
		s.watched, s.lastRecv, s.unanswered = v.link, v.recv, time.Time{}
	} else if busy && s.unanswered.IsZero() {
		s.unanswered = now
	}
	s.lastSent = v.sent
	s.stalled = !s.unanswered.IsZero() && now.Sub(s.unanswered) >= stallAfter(v.pto)
	recheck := v.recheck || (s.stalled && now.Sub(s.recheckAt) > pingTimeout)
	v.recheck = false
	if recheck {
		v.validated = netip.AddrPort{}
		s.recheckAt = now
		a.ping, a.recheck = true, true
	}
	wakeAt = nextTick(now, directCheck)
	if busy {
		wakeAt = nextTick(now, directCheckBusy)
	}
	var due time.Time
	switch {
	case !s.unanswered.IsZero() && !s.stalled:
		due = s.unanswered.Add(stallAfter(v.pto))
	case s.stalled && s.dialer && v.relaying && now.Before(s.recheckAt.Add(s.relayDelay)):
		due = s.recheckAt.Add(s.relayDelay)
	}
	if !due.IsZero() && due.Before(wakeAt) {
		wakeAt = due
	}
	return wakeAt
}

// punch schedules pings (and birthday attempts) while there is no direct link, and returns when the
// next one is due.
func (s *pathState) punch(v *pathView, now time.Time, a *pathActions) (wakeAt time.Time) {
	if !now.Before(s.nextPing) {
		a.ping = true
		d := s.pingEvery.Next()
		if v.link != nil { // relayed: keep trying, but gently
			d *= relayedPingSlow
		}
		s.nextPing = now.Add(d)
	}
	wakeAt = s.nextPing
	if v.role != "" && !v.validated.IsValid() {
		if !now.Before(s.nextHard) {
			a.birthday = true
			s.nextHard = now.Add(s.hardEvery.Next())
		}
		if s.nextHard.Before(wakeAt) {
			wakeAt = s.nextHard
		}
	}
	return wakeAt
}

// keepDirect is the dialer's care of a direct link: follow a peer that answers elsewhere now, and
// fall back to the relay when the link stalled and no probe gets through.
func (s *pathState) keepDirect(v *pathView, now time.Time, a *pathActions) {
	valid := v.validated
	switch {
	case !s.dialer || !v.direct || s.dialing:
	case valid.IsValid() && valid != v.sendsTo && v.canAlias:
		// The peer answers elsewhere now (it roamed): send the link's packets there. Same QUIC
		// connection, so every stream on it carries on.
		a.follow = valid
	case valid.IsValid() && valid != v.sendsTo:
		s.dialing = true // the peer answers elsewhere now: move the link there
		a.dial, a.dialAddr = PathDirect, valid
	case s.stalled && !valid.IsValid() && now.Sub(s.recheckAt) >= s.relayDelay && v.relaying:
		// The direct path went dark and no probe gets through: fall back to the relay now rather
		// than after the idle timeout; probing goes on and moves the link back when it can.
		s.dialing = true
		a.dial, a.fallback = PathRelay, true
	}
}

// connect dials a peer without a direct link: directly once an address answered, through the relay
// once hole punching had relayDelay alone. The dialer does, or the side whose spray found the
// address, whatever the key order. It returns when the relay dial is due (zero: not waiting for it).
func (s *pathState) connect(v *pathView, now time.Time, a *pathActions) time.Time {
	sprayed := v.validated.IsValid() && v.validated == v.sprayHit
	if !(s.dialer || sprayed || v.udpBlocked || s.waking) || !v.online || v.direct || s.dialing {
		return time.Time{}
	}
	switch {
	case v.validated.IsValid() && !v.noDirect && (s.dialer || sprayed):
		s.dialing = true
		a.dial, a.dialAddr = PathDirect, v.validated
	case v.link == nil && v.relaying && (v.udpBlocked || s.waking || now.Sub(s.searching) >= s.relayDelay):
		s.dialing = true
		a.dial = PathRelay
	case v.link == nil && v.relaying:
		return s.searching.Add(s.relayDelay)
	}
	return time.Time{}
}
