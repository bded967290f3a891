package abuse

import (
	"net/netip"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/internal/tcptun"
)

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

// CheckEvery is how often a server calls Guard.Sweep and Guard.Reload: how soon an edit of the
// block list file takes effect.
const CheckEvery = 2 * time.Second

// maxBuckets caps each of a Guard's maps of login buckets.
const maxBuckets = 10000

// GuardConfig configures a Guard. The zero value has no block list and the default rates.
type GuardConfig struct {
	// BlockList is a block list file (see ParseBlockList); "" = none. A missing or bad file fails
	// NewGuard.
	BlockList string
	// LoginRateIP and LoginBurstIP limit logins per source range (SourceRange; loopback is exempt
	// unless LimitLoopback). LoginRateIP 0 = DefaultLoginRateIP with DefaultLoginBurstIP; rate.Inf =
	// no limit.
	LoginRateIP  rate.Limit
	LoginBurstIP int
	// LoginRateKey and LoginBurstKey limit logins per identity key. LoginRateKey 0 =
	// DefaultLoginRateKey with DefaultLoginBurstKey; rate.Inf = no limit.
	LoginRateKey  rate.Limit
	LoginBurstKey int
	// LimitLoopback applies the per-address limit to loopback sources too (tests: every client is on
	// loopback there). Otherwise loopback, this very host, is limited per key only.
	LimitLoopback bool
	// Logger says when the block list is (re)loaded or a bad edit is kept out; nil = silent.
	Logger hclog.Logger
	// Now is the clock the login buckets fill by; nil = time.Now (tests: a clock they move).
	Now func() time.Time
	// TCP names the client behind a synthetic address of the server's TCP fallback
	// (*tcptun.Server); nil without one. Every check then counts a TCP client by its real address:
	// the block list, the login rates and the per-address shares.
	TCP Sources
}

// Sources names the real source of a synthetic address (tcptun.Server.Source), and false once the
// stream behind it is gone.
type Sources interface {
	Source(netip.Addr) (netip.Addr, bool)
}

// SourcesOf returns conn's Sources if it has them (a *tcptun.Server), else nil.
func SourcesOf(conn any) Sources {
	src, _ := conn.(Sources)
	return src
}

// Verdict is a Guard's answer to a login.
type Verdict int

// Verdicts.
const (
	Allowed        Verdict = iota
	Blocked                // the source address is in the block list
	TooManyFromIP          // over the per-address login rate
	TooManyWithKey         // over the per-key login rate
)

// Guard is a server's login gate: the block list and the login rate limits per source address and
// per identity key. It only answers; refusing, and disconnecting what a reloaded list now blocks,
// is the server's business. Safe for concurrent use.
type Guard struct {
	blocks  *BlockFile // nil: no block list
	perIP   *Limiter[netip.Prefix]
	perKey  *Limiter[[32]byte]
	limitLo bool
	log     hclog.Logger
	now     func() time.Time
	tcp     Sources // nil: no TCP fallback
}

// NewGuard returns the Guard cfg describes, with its block list loaded.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.LoginRateIP == 0 {
		cfg.LoginRateIP, cfg.LoginBurstIP = DefaultLoginRateIP, DefaultLoginBurstIP
	}
	if cfg.LoginRateKey == 0 {
		cfg.LoginRateKey, cfg.LoginBurstKey = DefaultLoginRateKey, DefaultLoginBurstKey
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Guard{
		now:     cfg.Now,
		perIP:   NewLimiter[netip.Prefix](cfg.LoginRateIP, cfg.LoginBurstIP, maxBuckets),
		perKey:  NewLimiter[[32]byte](cfg.LoginRateKey, cfg.LoginBurstKey, maxBuckets),
		limitLo: cfg.LimitLoopback,
		log:     cfg.Logger,
		tcp:     cfg.TCP,
	}
	if cfg.BlockList != "" {
		b, err := NewBlockFile(cfg.BlockList)
		if err != nil {
			return nil, err
		}
		g.blocks = b
		g.log.Info("block list loaded", "file", b.Path(), "entries", b.Len())
	}
	return g, nil
}

// Source returns the address a server should hold a to: a itself, or for a synthetic address of the
// TCP fallback the address of the TCP client behind it (while its stream lasts; after that the
// synthetic address, which no list names and SourceRange counts alone).
func (g *Guard) Source(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if g.tcp != nil && tcptun.IsSynthetic(a) {
		if src, ok := g.tcp.Source(a); ok {
			return src.Unmap()
		}
	}
	return a
}

// Blocked reports whether a (or the TCP client behind it) is in the block list.
func (g *Guard) Blocked(a netip.Addr) bool { return g.blocks.Blocked(g.Source(a)) }

// SourceRange is the package's SourceRange of Source(a): the range per-address limits count a in.
func (g *Guard) SourceRange(a netip.Addr) netip.Prefix { return SourceRange(g.Source(a)) }

// Limited returns the range that per-address limits count a's requests under (SourceRange), and
// false for an address they do not apply to: an unknown one, or loopback — this very host — unless
// LimitLoopback.
func (g *Guard) Limited(a netip.Addr) (netip.Prefix, bool) {
	a = g.Source(a)
	if !a.IsValid() || (a.IsLoopback() && !g.limitLo) {
		return netip.Prefix{}, false
	}
	return SourceRange(a), true
}

// CheckLogin takes a login token for the identity key from address a, in that order: a blocked
// address takes none, and one over its address's rate takes none of the key's.
func (g *Guard) CheckLogin(key [32]byte, a netip.Addr) Verdict {
	a = g.Source(a)
	if g.Blocked(a) {
		return Blocked
	}
	now := g.now()
	if p, ok := g.Limited(a); ok && !g.perIP.Allow(p, now) {
		return TooManyFromIP
	}
	if !g.perKey.Allow(key, now) {
		return TooManyWithKey
	}
	return Allowed
}

// Maintain is what a server runs every CheckEvery: it drops the login buckets that are full again and
// reloads the block list (Reload), logging an error as a warning.
func (g *Guard) Maintain(changed func()) {
	now := g.now()
	g.perIP.Sweep(now)
	g.perKey.Sweep(now)
	if err := g.Reload(changed); err != nil {
		g.log.Warn("block list not reloaded; keeping the old one", "error", err)
	}
}

// Reload re-reads the block list file if it changed; if it did, it logs so and runs changed, where
// the server disconnects the nodes the list now blocks. On error the old list stays. Without a
// block list it does nothing.
func (g *Guard) Reload(changed func()) error {
	if g.blocks == nil {
		return nil
	}
	ok, err := g.blocks.Reload()
	if ok {
		g.log.Info("block list loaded", "file", g.blocks.Path(), "entries", g.blocks.Len())
		changed()
	}
	return err
}

// SourceRange is the range an address is counted in by per-address limits: the IPv4 address itself,
// or the IPv6 /64 (one subscriber's usual share). IPv4-mapped addresses count as IPv4.
func SourceRange(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if tcptun.IsSynthetic(a) {
		// A TCP client's stream whose client Guard.Source cannot name (gone, or no Sources given):
		// one range each.
		return netip.PrefixFrom(a, 128)
	}
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p
}
