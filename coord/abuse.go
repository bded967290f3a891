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

	"github.com/warren-net/warren/abuse"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// Abuse controls: a CIDR block list (Config.BlockList), re-read when its file changes, and login rate
// limits per source address and per identity key. A blocked or over-limit login is refused with
// control.CodeBlocked or control.CodeRateLimited before it touches the store; nodes online from a
// newly blocked range are disconnected; side-channel packets (binding requests, relay frames) from
// blocked addresses are dropped.

// Defaults for the login rate limits. The per-address limit must let a whole carrier-grade NAT
// (hundreds of nodes behind one public address) log in again after a server restart: with a burst
// of 300 and 50/s, 300 nodes behind one address are back at once and 1000 within 14 s (the old 5/s,
// burst 20 took 36 s for 200), while one address still cannot make the server do more than 50
// logins (handshake plus a synced write) a second. The per-key limit stays tight: one node has no
// reason to log in more than once a second.
const (
	DefaultLoginRateIP   rate.Limit = 50
	DefaultLoginBurstIP             = 300
	DefaultLoginRateKey  rate.Limit = 1
	DefaultLoginBurstKey            = 5
)

// New identities per source address: every new key costs a node row and an overlay address for
// good, so their rate is bounded below that of logins. The burst lets an office or a carrier-grade
// NAT bring a few hundred new devices up at once.
const (
	newNodeRate  = rate.Limit(0.1)
	newNodeBurst = 300
)

const (
	// blockCheckEvery is how often the block list file's mtime is checked (and idle buckets swept).
	blockCheckEvery = 2 * time.Second
	// maxLimiters caps each map of login buckets.
	maxLimiters = 10000
)

// guards is the Server's abuse-control state.
type guards struct {
	blocks  *abuse.BlockFile // nil: no block list
	perIP   *abuse.Limiter[netip.Prefix]
	perKey  *abuse.Limiter[nodeKey]
	newKeys *abuse.Limiter[netip.Prefix] // new identities per address
	limitLo bool                         // tests: limit loopback sources per address too
}

// initAbuse sets the limits up and loads the block list; a bad list fails New.
func (s *Server) initAbuse() error {
	c := &s.cfg
	if c.LoginRateIP == 0 {
		c.LoginRateIP, c.LoginBurstIP = DefaultLoginRateIP, DefaultLoginBurstIP
	}
	if c.LoginRateKey == 0 {
		c.LoginRateKey, c.LoginBurstKey = DefaultLoginRateKey, DefaultLoginBurstKey
	}
	s.guards.perIP = abuse.NewLimiter[netip.Prefix](c.LoginRateIP, c.LoginBurstIP, maxLimiters)
	s.guards.perKey = abuse.NewLimiter[nodeKey](c.LoginRateKey, c.LoginBurstKey, maxLimiters)
	burst := newNodeBurst
	if c.newNodeBurst > 0 {
		burst = c.newNodeBurst
	}
	s.guards.newKeys = abuse.NewLimiter[netip.Prefix](newNodeRate, burst, maxLimiters)
	s.guards.limitLo = c.limitLoopback
	s.passwords = newPasswordGuard()
	if c.BlockList == "" {
		return nil
	}
	b, err := abuse.NewBlockFile(c.BlockList)
	if err != nil {
		return fmt.Errorf("coord: %w", err)
	}
	s.guards.blocks = b
	s.log.Info("block list loaded", "file", c.BlockList, "entries", b.Len())
	return nil
}

// checkAbuse sweeps idle login buckets, re-reads the block list if its file changed and disconnects
// nodes online from newly blocked addresses (New runs it periodically).
func (s *Server) checkAbuse() {
	now := time.Now()
	s.guards.perIP.Sweep(now)
	s.guards.perKey.Sweep(now)
	s.guards.newKeys.Sweep(now)
	s.sweepPasswordLimits(now)
	if err := s.ReloadBlockList(); err != nil {
		s.log.Warn("block list not reloaded; keeping the old one", "file", s.cfg.BlockList, "error", err)
	}
}

// ReloadBlockList re-reads Config.BlockList if its file changed and disconnects nodes online from
// newly blocked addresses. On error the old list stays. The Server also does this by itself every
// few seconds.
func (s *Server) ReloadBlockList() error {
	if s.guards.blocks == nil {
		return nil
	}
	changed, err := s.guards.blocks.Reload()
	if changed {
		s.log.Info("block list loaded", "file", s.cfg.BlockList, "entries", s.guards.blocks.Len())
		s.disconnectBlocked()
	}
	return err
}

// disconnectBlocked closes the control connections of nodes online from a blocked address.
func (s *Server) disconnectBlocked() {
	var victims []*session
	s.mu.Lock()
	for _, sess := range s.sessions {
		if s.blocked(sess.observed.Addr()) {
			victims = append(victims, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range victims {
		sess.log.Info("disconnecting node: its address is blocked")
		sess.conn.CloseWithError(closeRefused, "address blocked by the server")
	}
}

// blocked reports whether a is in the block list.
func (s *Server) blocked(a netip.Addr) bool { return s.guards.blocks.Blocked(a) }

// checkLogin refuses a login from a blocked address or over a rate limit.
func (s *Server) checkLogin(key nodeKey, remote net.Addr) *control.Error {
	a := addrPort(remote).Addr().Unmap()
	if s.blocked(a) {
		return &control.Error{Code: control.CodeBlocked, Message: "logins from this address are blocked by the server operator"}
	}
	now := time.Now()
	if p, ok := s.limitedSource(a); ok && !s.guards.perIP.Allow(p, now) {
		return &control.Error{Code: control.CodeRateLimited, Message: "too many logins from this address; try again later"}
	}
	if !s.guards.perKey.Allow(key, now) {
		return &control.Error{Code: control.CodeRateLimited, Message: "too many logins with this identity; try again later"}
	}
	return nil
}

// checkNewNode refuses a key the server has not seen from an address that brought too many new ones.
func (s *Server) checkNewNode(ctx context.Context, key nodeKey, from netip.Addr) error {
	p, limited := s.limitedSource(from)
	if !limited {
		return nil
	}
	if _, err := s.cfg.Store.Node(ctx, key[:]); !errors.Is(err, store.ErrNotFound) {
		return nil // known (or the store will say what is wrong in a moment)
	}
	if !s.guards.newKeys.Allow(p, time.Now()) {
		return &control.Error{Code: control.CodeRateLimited, Message: "too many new nodes from this address; try again later"}
	}
	return nil
}

// limitedSource returns the prefix that per-address limits count a's requests under (the address
// for IPv4, its /64 for IPv6), and false for an address without such limits: unknown, or loopback
// (this host; only per-key limits apply).
func (s *Server) limitedSource(a netip.Addr) (netip.Prefix, bool) {
	a = a.Unmap()
	if !a.IsValid() || (a.IsLoopback() && !s.guards.limitLo) {
		return netip.Prefix{}, false
	}
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, err := a.Prefix(bits)
	return p, err == nil
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
