package coord

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/coord/store"
)

// Password work. Hashing or checking a network password costs one argon2id run — tens of
// milliseconds of CPU and 19 MiB, by design — so it is what a password guesser, or a flood of joins,
// would spend the server on. It is bounded three ways: per node key and per source address (token
// buckets: a handful of tries, then one every few seconds; a node has no reason to try more), and in
// concurrency (at most a few runs at once, however many connections ask). And it runs before the
// server-wide change lock, so a slow hash never holds up other nodes' changes.

// Limits on password work. The per-address burst lets a whole carrier-grade NAT's worth of nodes
// join at once after a password is handed out; a single guesser gets 2 tries a second at most.
const (
	passwordRateKey  rate.Limit = 0.5
	passwordBurstKey            = 5
	passwordRateIP   rate.Limit = 2
	passwordBurstIP             = 30
)

// passwordGuard is the Server's bound on password work.
type passwordGuard struct {
	perKey *abuse.Limiter[nodeKey]
	perIP  *abuse.Limiter[netip.Prefix]
	slots  chan struct{} // one token per argon2id run in progress
}

func newPasswordGuard() passwordGuard {
	return passwordGuard{
		perKey: abuse.NewLimiter[nodeKey](passwordRateKey, passwordBurstKey, maxLimiters),
		perIP:  abuse.NewLimiter[netip.Prefix](passwordRateIP, passwordBurstIP, maxLimiters),
		slots:  make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
	}
}

// passwordWork runs fn, an argon2id hash or check asked for by the node key (nil: the operator, who
// is not rate limited) from address from (invalid: unknown), within the limits.
func (s *Server) passwordWork(ctx context.Context, key []byte, from netip.Addr, fn func() error) error {
	now := s.now()
	if key != nil {
		k := keyOf(key)
		if !s.passwords.perKey.Allow(k, now) {
			return tooManyPasswords(s.passwords.perKey.Wait(k, now))
		}
		if p, ok := s.guard.Limited(from); ok && !s.passwords.perIP.Allow(p, now) {
			return tooManyPasswords(s.passwords.perIP.Wait(p, now))
		}
	}
	select {
	case s.passwords.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting to check a password: %w", ctx.Err())
	}
	defer func() { <-s.passwords.slots }()
	return fn()
}

func tooManyPasswords(wait time.Duration) error {
	secs := max(1, int((wait+time.Second-1)/time.Second))
	return &control.Error{Code: control.CodeRateLimited,
		Message: fmt.Sprintf("too many password attempts; try again in %ds", secs)}
}

// sweepPasswordLimits drops idle buckets (checkAbuse calls it).
func (s *Server) sweepPasswordLimits(now time.Time) {
	s.passwords.perKey.Sweep(now)
	s.passwords.perIP.Sweep(now)
}

// prepared is a network request's password work, done before the change lock.
type prepared struct {
	hash     string // OpCreate: the new network's password hash ("" = no password)
	verified string // OpJoin: the stored hash the password matched ("" = none checked)
}

// prepare does r's password work ahead of the change lock: it hashes a new network's password, and
// checks a join's password when the join would need it (join checks again under the lock if the
// network's password changed meanwhile).
func (s *Server) prepare(ctx context.Context, sess *session, r *control.Request) (prepared, error) {
	var p prepared
	from := s.sourceOf(sess)
	switch r.Op {
	case control.OpCreate:
		if r.Password == "" {
			return p, nil
		}
		err := s.passwordWork(ctx, sess.key[:], from, func() (err error) {
			p.hash, err = store.HashPassword(r.Password)
			return err
		})
		return p, err
	case control.OpJoin:
		n, err := s.cfg.Store.Network(ctx, r.Network)
		if err != nil || n.PasswordHash == "" || n.Locked {
			return p, nil // join answers these under the lock
		}
		member, _, banned, err := s.cfg.Store.Standing(ctx, r.Network, sess.key[:])
		if err != nil || member || banned {
			return p, nil
		}
		if err := s.checkPassword(ctx, sess, r, n.PasswordHash); err != nil {
			return p, err
		}
		p.verified = n.PasswordHash
	}
	return p, nil
}

// checkPassword checks a join's password against hash.
func (s *Server) checkPassword(ctx context.Context, sess *session, r *control.Request, hash string) error {
	var ok bool
	err := s.passwordWork(ctx, sess.key[:], s.sourceOf(sess), func() (err error) {
		ok, err = store.VerifyPassword(hash, r.Password)
		return err
	})
	if err != nil {
		return err
	}
	if !ok {
		sess.log.Info("join refused: wrong password", "network", r.Network)
		return &control.Error{Code: control.CodeWrongPassword, Message: fmt.Sprintf("wrong password for network %q", r.Network)}
	}
	return nil
}
