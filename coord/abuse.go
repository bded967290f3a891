package coord

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
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

const (
	// blockCheckEvery is how often the block list file's mtime is checked (and idle buckets swept).
	blockCheckEvery = 2 * time.Second
	// maxLimiters caps each map of login buckets.
	maxLimiters = 10000
)

// blockList is an immutable set of prefixes, grouped by length so a lookup is one map probe per
// distinct length.
type blockList struct {
	byLen map[int]map[netip.Prefix]struct{}
	n     int
}

func (b *blockList) contains(a netip.Addr) bool {
	if b == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for bits, set := range b.byLen {
		if bits > a.BitLen() {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if _, ok := set[p]; ok {
			return true
		}
	}
	return false
}

// parseBlockList parses one CIDR or address per line; '#' starts a comment, blank lines are skipped.
func parseBlockList(data []byte) (*blockList, error) {
	b := &blockList{byLen: make(map[int]map[netip.Prefix]struct{})}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		p, err := ParseBlockPrefix(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if b.byLen[p.Bits()] == nil {
			b.byLen[p.Bits()] = make(map[netip.Prefix]struct{})
		}
		b.byLen[p.Bits()][p] = struct{}{}
		b.n++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return b, nil
}

// abuse is the Server's abuse-control state.
type abuse struct {
	blocks  atomic.Pointer[blockList]
	loadMu  sync.Mutex // serialises reloads; guards mtime and size
	mtime   time.Time  // of the loaded file
	size    int64
	perIP   *limiterSet[netip.Prefix]
	perKey  *limiterSet[nodeKey]
	limitLo bool // tests: limit loopback sources per address too
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
	s.abuse.perIP = newLimiterSet[netip.Prefix](c.LoginRateIP, max(c.LoginBurstIP, 1))
	s.abuse.perKey = newLimiterSet[nodeKey](c.LoginRateKey, max(c.LoginBurstKey, 1))
	s.abuse.limitLo = c.limitLoopback
	if c.BlockList == "" {
		return nil
	}
	if _, err := s.loadBlockList(); err != nil {
		return fmt.Errorf("coord: block list %s: %w", c.BlockList, err)
	}
	return nil
}

// loadBlockList reads the block list file if it changed since the last load and reports whether it
// did. On error the old list stays.
func (s *Server) loadBlockList() (bool, error) {
	s.abuse.loadMu.Lock()
	defer s.abuse.loadMu.Unlock()
	fi, err := os.Stat(s.cfg.BlockList)
	if err != nil {
		return false, err
	}
	if fi.ModTime().Equal(s.abuse.mtime) && fi.Size() == s.abuse.size {
		return false, nil
	}
	data, err := os.ReadFile(s.cfg.BlockList)
	if err != nil {
		return false, err
	}
	s.abuse.mtime, s.abuse.size = fi.ModTime(), fi.Size()
	b, err := parseBlockList(data)
	if err != nil {
		return false, err
	}
	s.abuse.blocks.Store(b)
	s.log.Info("block list loaded", "file", s.cfg.BlockList, "entries", b.n)
	return true, nil
}

// checkAbuse sweeps idle login buckets, re-reads the block list if its file changed and disconnects
// nodes online from newly blocked addresses (New runs it periodically).
func (s *Server) checkAbuse() {
	now := time.Now()
	s.abuse.perIP.sweep(now)
	s.abuse.perKey.sweep(now)
	if err := s.ReloadBlockList(); err != nil {
		s.log.Warn("block list not reloaded; keeping the old one", "file", s.cfg.BlockList, "error", err)
	}
}

// ReloadBlockList re-reads Config.BlockList if its file changed and disconnects nodes online from
// newly blocked addresses. On error the old list stays. The Server also does this by itself every
// few seconds.
func (s *Server) ReloadBlockList() error {
	if s.cfg.BlockList == "" {
		return nil
	}
	changed, err := s.loadBlockList()
	if changed {
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
func (s *Server) blocked(a netip.Addr) bool { return s.abuse.blocks.Load().contains(a) }

// checkLogin refuses a login from a blocked address or over a rate limit.
func (s *Server) checkLogin(key nodeKey, remote net.Addr) *control.Error {
	a := addrPort(remote).Addr().Unmap()
	if s.blocked(a) {
		return &control.Error{Code: control.CodeBlocked, Message: "logins from this address are blocked by the server operator"}
	}
	now := time.Now()
	if s.abuse.limitLo || !a.IsLoopback() { // loopback is this host: only the per-key limit applies
		bits := 64
		if a.Is4() {
			bits = 32
		}
		if p, err := a.Prefix(bits); err == nil && !s.abuse.perIP.allow(p, now) {
			return &control.Error{Code: control.CodeRateLimited, Message: "too many logins from this address; try again later"}
		}
	}
	if !s.abuse.perKey.allow(key, now) {
		return &control.Error{Code: control.CodeRateLimited, Message: "too many logins with this identity; try again later"}
	}
	return nil
}

// refuseLogin sends the refusal and closes the connection.
func refuseLogin(conn *quic.Conn, stream *quic.Stream, cerr *control.Error) {
	control.WriteMsg(stream, &control.Msg{Type: control.TypeReply, Reply: &control.Reply{Code: cerr.Code, Error: cerr.Message}})
	stream.Close()
	time.Sleep(50 * time.Millisecond) // let the reply leave before the close frame
	conn.CloseWithError(closeRefused, "login refused")
}

// limiterSet is a bounded map of token buckets. An entry whose bucket is full again is the same as a
// new one and is swept; if the map is still full, an arbitrary entry makes room.
type limiterSet[K comparable] struct {
	r     rate.Limit
	burst int
	mu    sync.Mutex
	m     map[K]*rate.Limiter
}

func newLimiterSet[K comparable](r rate.Limit, burst int) *limiterSet[K] {
	return &limiterSet[K]{r: r, burst: burst, m: make(map[K]*rate.Limiter)}
}

func (l *limiterSet[K]) allow(k K, now time.Time) bool {
	if l.r == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[k]
	if lim == nil {
		if len(l.m) >= maxLimiters {
			l.sweepLocked(now)
		}
		for victim := range l.m {
			if len(l.m) < maxLimiters {
				break
			}
			delete(l.m, victim)
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.m[k] = lim
	}
	return lim.AllowN(now, 1)
}

func (l *limiterSet[K]) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
}

func (l *limiterSet[K]) sweepLocked(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
}

func (l *limiterSet[K]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
