package coord

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warren-net/warren/coord/relay"
)

// A node's NAT may map it to a new public address at any time. quic-go then migrates the node's
// control connection (after path validation) and the coord must follow, or it would drop the node's
// relay frames and keep giving its peers a dead endpoint to punch. quic-go tells no one of a
// migration, so the coord looks at the connections' addresses (followAddrs, every addrCheckEvery).
//
// Looking at every session each time was a quarter of an idle coord's CPU at 1000 nodes (a few cold
// cache lines per session, twice a second: BENCHMARKS.md, stop 36). A control connection migrates
// only when the node sends, and a node that moved and has traffic says so: a node whose direct links
// stall sends its endpoints report again at once (peer.Config.OnStall), and a relayed node's frames
// arrive from an address no node is bound to. So followAddrs looks at a session at every tick for
// addrWatchFor after the node last sent a control message, at every session when the relay dropped
// frames from an unknown address since the last tick, and at every session every addrScanEvery,
// for a node that moved with nothing but keep-alives to send.

// addrCheckEvery is how often followAddrs runs.
const addrCheckEvery = 500 * time.Millisecond

// addrWatchFor is how long followAddrs keeps looking at a session after its node sent a message:
// long enough for the path validation that precedes a migration (a round trip) on a slow path.
const addrWatchFor = 3 * time.Second

// addrScanEvery is how often followAddrs looks at every session.
const addrScanEvery = 5 * time.Second

// addrWatch decides which sessions followAddrs looks at. Safe for concurrent use.
type addrWatch struct {
	mu       sync.Mutex
	recent   map[*session]int // sessions whose node sent lately: ticks left to look at them
	tick     int              // ticks so far
	unknown  uint64           // relay frames dropped for an unknown source, at the last tick
	watchFor int              // ticks a message keeps its session looked at
	scanIn   int              // ticks between looks at every session
}

func newAddrWatch() *addrWatch {
	return &addrWatch{recent: make(map[*session]int),
		watchFor: int(addrWatchFor / addrCheckEvery), scanIn: int(addrScanEvery / addrCheckEvery)}
}

// sent records that sess's node sent a control message.
func (w *addrWatch) sent(sess *session) {
	w.mu.Lock()
	w.recent[sess] = w.watchFor
	w.mu.Unlock()
}

// next advances one tick, given the relay's count of frames dropped for an unknown source so far. It
// reports whether to look at every session, and otherwise which sessions.
func (w *addrWatch) next(unknownDrops uint64) (all bool, some []*session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tick++
	all = w.tick%w.scanIn == 0 || unknownDrops != w.unknown
	w.unknown = unknownDrops
	if !all && len(w.recent) > 0 {
		some = slices.Collect(maps.Keys(w.recent))
	}
	for sess, left := range w.recent {
		if left <= 1 {
			delete(w.recent, sess)
		} else {
			w.recent[sess] = left - 1
		}
	}
	return all, some
}

// followAddrs moves the sessions whose control connection migrated to their new address. New runs it
// every addrCheckEvery.
func (s *Server) followAddrs() {
	type move struct {
		sess *session
		to   netip.AddrPort
	}
	var moves []move
	check := func(sess *session) {
		if a := addrPort(sess.conn.RemoteAddr()); a.IsValid() && a != sess.observed {
			moves = append(moves, move{sess, a})
		}
	}
	all, some := s.addrWatch.next(s.relay.Stats().Dropped(relay.DropUnknownSource))
	s.mu.Lock()
	if all {
		for _, sess := range s.sessions {
			check(sess)
		}
	} else {
		for _, sess := range some {
			if s.sessions[sess.key] == sess {
				check(sess)
			}
		}
	}
	s.mu.Unlock()
	for _, m := range moves {
		s.rebind(m.sess, m.to)
	}
}

// rebind moves sess to its new address and tells its peers the new endpoints.
func (s *Server) rebind(sess *session, to netip.AddrPort) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.mu.Lock()
	if s.sessions[sess.key] != sess {
		s.mu.Unlock()
		return
	}
	from := sess.observed
	sess.observed = to
	s.relay.Move(sess.member, to)
	s.mu.Unlock()
	sess.mu.Lock()
	sess.endpoints = s.candidateEndpoints(to, sess.local)
	sess.mu.Unlock()
	sess.log.Info("node address changed", "from", from, "to", to)
	if err := s.refreshPeers(sess.key, nil); err != nil {
		s.log.Error("address change: refresh peers", "error", err)
	}
}
