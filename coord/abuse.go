package coord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/coord/store"
)

// Abuse controls: a CIDR block list (Config.BlockList), re-read when its file changes, and login rate
// limits per source address and per identity key (package abuse's Guard, shared with the standalone
// relay). A blocked or over-limit login is refused with control.CodeBlocked or
// control.CodeRateLimited before it touches the store; nodes online from a newly blocked range are
// disconnected; side-channel packets (binding requests, relay frames) from blocked addresses are
// dropped.

// Defaults for the login rate limits: package abuse's (see there for why these numbers).
const (
	DefaultLoginRateIP   = abuse.DefaultLoginRateIP
	DefaultLoginBurstIP  = abuse.DefaultLoginBurstIP
	DefaultLoginRateKey  = abuse.DefaultLoginRateKey
	DefaultLoginBurstKey = abuse.DefaultLoginBurstKey
)

// blockCheckEvery is how often the block list file's mtime is checked (and idle buckets swept).
const blockCheckEvery = abuse.CheckEvery

// New identities per source address: every new key costs a node row and an overlay address for
// good, so their rate is bounded below that of logins. The burst lets an office or a carrier-grade
// NAT bring a few hundred new devices up at once.
const (
	newNodeRate  = rate.Limit(0.1)
	newNodeBurst = 300
)

// maxLimiters caps the server's own maps of buckets (new identities, password work).
const maxLimiters = 10000

// initAbuse sets the limits up and loads the block list; a bad list fails New.
func (s *Server) initAbuse() error {
	c := &s.cfg
	g, err := abuse.NewGuard(abuse.GuardConfig{BlockList: c.BlockList, LoginRateIP: c.LoginRateIP, LoginBurstIP: c.LoginBurstIP,
		LoginRateKey: c.LoginRateKey, LoginBurstKey: c.LoginBurstKey, LimitLoopback: c.limitLoopback, Logger: s.log, Now: c.clock, TCP: abuse.SourcesOf(c.TCP)})
	if err != nil {
		return fmt.Errorf("coord: %w", err)
	}
	s.guard = g
	burst := newNodeBurst
	if c.newNodeBurst > 0 {
		burst = c.newNodeBurst
	}
	s.newKeys = abuse.NewLimiter[netip.Prefix](newNodeRate, burst, maxLimiters)
	s.passwords = newPasswordGuard()
	s.initRequestLimit()
	return nil
}

// checkAbuse sweeps idle login buckets, re-reads the block list if its file changed and disconnects
// nodes online from newly blocked addresses (New runs it periodically).
func (s *Server) checkAbuse() {
	now := s.now()
	s.newKeys.Sweep(now)
	s.sweepPasswordLimits(now)
	s.requests.Sweep(now)
	s.guard.Maintain(s.disconnectBlocked)
}

// ReloadBlockList re-reads Config.BlockList if its file changed and disconnects nodes online from
// newly blocked addresses. On error the old list stays. The Server also does this by itself every
// few seconds.
func (s *Server) ReloadBlockList() error { return s.guard.Reload(s.disconnectBlocked) }

// Blocked reports whether address a is in the block list (the TCP fallback asks before a stream's
// handshake: its QUIC connections come from synthetic addresses the list cannot name).
func (s *Server) Blocked(a netip.Addr) bool { return s.guard.Blocked(a) }

// disconnectBlocked closes the control connections of nodes online from a blocked address.
func (s *Server) disconnectBlocked() {
	var victims []*session
	s.mu.Lock()
	for _, sess := range s.sessions {
		if s.guard.Blocked(sess.observed.Addr()) {
			victims = append(victims, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range victims {
		sess.log.Info("disconnecting node: its address is blocked")
		sess.conn.CloseWithError(closeRefused, "address blocked by the server")
	}
}

// checkLogin refuses a login from a blocked address or over a rate limit.
func (s *Server) checkLogin(key nodeKey, remote net.Addr) *control.Error {
	switch s.guard.CheckLogin(key, addrPort(remote).Addr()) {
	case abuse.Blocked:
		return &control.Error{Code: control.CodeBlocked, Message: "logins from this address are blocked by the server operator"}
	case abuse.TooManyFromIP:
		return &control.Error{Code: control.CodeRateLimited, Message: "too many logins from this address; try again later"}
	case abuse.TooManyWithKey:
		return &control.Error{Code: control.CodeRateLimited, Message: "too many logins with this identity; try again later"}
	}
	return nil
}

// checkNewNode refuses a key the server has not seen from an address that brought too many new ones.
func (s *Server) checkNewNode(ctx context.Context, key nodeKey, from netip.Addr) error {
	p, limited := s.guard.Limited(from)
	if !limited {
		return nil
	}
	if _, err := s.cfg.Store.Node(ctx, key[:]); !errors.Is(err, store.ErrNotFound) {
		return nil // known (or the store will say what is wrong in a moment)
	}
	if !s.newKeys.Allow(p, s.now()) {
		return &control.Error{Code: control.CodeRateLimited, Message: "too many new nodes from this address; try again later"}
	}
	return nil
}

// sourceOf returns the address sess's control connection comes from.
func (s *Server) sourceOf(sess *session) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sess.observed.Addr()
}

// refuseLogin sends the refusal and closes the connection.
func refuseLogin(conn *quic.Conn, stream *quic.Stream, cerr *control.Error) {
	control.WriteMsg(stream, &control.Msg{Type: control.TypeReply, Reply: &control.Reply{Code: cerr.Code, Error: cerr.Message}})
	stream.Close()
	time.Sleep(50 * time.Millisecond) // let the reply leave before the close frame
	conn.CloseWithError(closeRefused, "login refused")
}
