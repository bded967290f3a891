package peer

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"
)

// Winding down idle links. A link keeps itself alive: QUIC keep-alives every third of the idle
// timeout, and on a direct link the stall check's tick. On an idle node with many peers those are
// most of its wake-ups, and of the coord's and relay's work. So a link that carried nothing for
// Config.LinkIdle (no packet either way, no stream open: link.used and link.streams) winds down:
//
//   - The side that saw it idle first closes it with codeIdle; the other side reads that code and
//     winds down too (peerState.peerSlept). Both mark the peer dormant: no probes, no keep-alives, no
//     birthday attempts, no dials; its status path is PathIdle.
//   - The first packet (Send) or stream (DialStream) for a dormant peer wakes it (wakeIfDormant):
//     the search starts afresh, and the waking side dials the relay at once, whatever the key order,
//     since the dormant side does not punch and would not answer from behind its NAT. The packet
//     itself is refused with ErrLinkWaking (node/sendq.go holds its queue until WaitLink says the
//     link is up); a stream waits for the link, and when the link wound down on the direct path
//     for the direct one (link.interimUntil, stream.go's waitLink). The woken side gets the link, leaves dormancy, and
//     punching moves both to a direct path as at first contact.
//   - Links wind down only while the node is logged in to a relay: that is the way back. Without
//     one a dormant pair behind NATs could not reach each other again.
//   - While the node cannot reach its coord (HoldLinks), no link winds down and every dormant one
//     comes back at once: the coord's relay and its signals are gone, and the peer, which lost the
//     coord too, does the same, so the two punch towards the endpoints they knew while their NATs
//     still remember each other, as at first contact. Tunnels keep working while the coord is down.
//
// Packets that Config.Chatter reports (the node's: link-local multicast such as mDNS and LLMNR, which
// a TUN-mode node's operating system sends every so often) count for neither: they go over live links
// only and do not keep a link up.
//
// What keeps a NAT mapping open for the way back is the node's connection to the coord and relay
// over the same socket; it is not the link's job.

// chatter reports whether pkt is Config.Chatter's: no use of a link, and no reason to wake one.
func (e *Endpoint) chatter(pkt []byte) bool { return e.cfg.Chatter != nil && e.cfg.Chatter(pkt) }

// codeIdle is the QUIC application error code of a link closed because it was idle.
const codeIdle quic.ApplicationErrorCode = 0x1d1e

// closedIdle reports whether conn was closed as idle, and whether the peer closed it.
func closedIdle(conn *quic.Conn) (idle, byPeer bool) {
	var ae *quic.ApplicationError
	if errors.As(context.Cause(conn.Context()), &ae) && ae.ErrorCode == codeIdle {
		return true, ae.Remote
	}
	return false, false
}

// wakeIfDormant asks the peer loop to bring a dormant peer's link back, once per wake-up; it
// reports whether the peer is dormant. Cheap enough to call for every packet without a link.
func (ps *peerState) wakeIfDormant() bool {
	if !ps.dormant.Load() {
		return false
	}
	if ps.wanted.CompareAndSwap(false, true) {
		poke(ps.wake)
	}
	return true
}

// HoldLinks says whether the node has lost its coord (see the top of this file): while held, no
// link winds down, and dormant ones come back.
func (e *Endpoint) HoldLinks(hold bool) {
	if e.hold.Swap(hold) == hold {
		return
	}
	e.mu.RLock()
	for _, ps := range e.peers {
		poke(ps.wake)
	}
	e.mu.RUnlock()
}

// WaitLink waits until a link to k is up (for a packet Send refused with ErrLinkWaking), or ctx
// ends.
func (e *Endpoint) WaitLink(ctx context.Context, k Key) error {
	_, err := e.waitLink(ctx, k, false)
	return err
}

// rest is a dormant peer's turn: it reports true (nothing to do) until traffic for the peer wants
// the link back or the peer brings one. A link the peer closed as idle makes the peer dormant.
func (s *pathState) rest(v *pathView, now time.Time) bool {
	if !s.dormant && !(v.peerSlept && v.link == nil) {
		return false
	}
	s.dormant = true
	if v.link != nil && v.link == s.slept {
		v.link, v.direct = nil, false // still closing: as good as gone
	}
	if v.link == nil && !v.wanted && !v.hold {
		return true
	}
	s.dormant, s.slept = false, nil
	s.wasDirect, s.hadLink = false, false
	if v.link == nil { // our traffic wakes it: search afresh and reach the peer through the relay
		s.waking = true
		s.restart(v, now)
	}
	return false
}

// idle winds the link down once it carried nothing for linkIdle (only with a relay to come back
// through, and not while a dial is under way). It reports whether it did; otherwise it returns when
// the link may be idle long enough, at the latest.
func (s *pathState) idle(v *pathView, now time.Time, a *pathActions) (bool, time.Time) {
	if v.link == nil || s.linkIdle <= 0 || !v.relaying || v.hold || s.dialing {
		return false, time.Time{}
	}
	if v.link != s.useLink || v.used != s.lastUse || v.streams > 0 {
		s.useLink, s.lastUse, s.usedAt = v.link, v.used, now
	}
	if now.Sub(s.usedAt) < s.linkIdle {
		return false, s.usedAt.Add(s.linkIdle)
	}
	*a = pathActions{sleep: true}
	s.dormant, s.slept = true, v.link
	s.useLink = nil
	s.wasDirect, s.hadLink = false, false
	return true, time.Time{}
}
