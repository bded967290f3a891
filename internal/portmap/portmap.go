// Package portmap asks the home router to map the node's UDP port, so that peers can reach it
// behind a NAT no hole punching opens: PCP (RFC 6887, MAP) first, NAT-PMP (RFC 6886) when the router
// answers PCP with UNSUPP_VERSION or not at all, UPnP-IGD (SSDP, then SOAP over HTTP to the gateway
// only) when it answers neither. A Mapper keeps one mapping, renews it at half its
// lifetime and deletes it on Close. The router is the default route's gateway (DefaultGateway; Linux
// only). Standard library only: it knows nothing of peers, the coord or the node, which decides what
// to do with the external address (a candidate endpoint).
package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The protocols a mapping can come from, as `warren netcheck` names them.
const (
	ProtoPCP    = "pcp"
	ProtoNATPMP = "nat-pmp"
	ProtoUPnP   = "upnp"
)

// Defaults and bounds of Config and the renewal schedule.
const (
	DefaultLifetime = 2 * time.Hour          // what a Mapper asks for
	defaultTimeout  = 250 * time.Millisecond // first wait for an answer (RFC 6886 section 3.1); doubles per try
	defaultTries    = 4                      // per protocol and request: 0.25+0.5+1+2 s at most
	minRenew        = 5 * time.Second        // the soonest a granted mapping is renewed
	minRetry        = 30 * time.Second       // after a failure: 30 s, doubling up to maxRetry
	maxRetry        = 10 * time.Minute
	deleteTries     = 2 // Close waits at most 0.75 s for the router to confirm a delete
)

// Mapping is a port mapping on the router.
type Mapping struct {
	Protocol string         // ProtoPCP, ProtoNATPMP or ProtoUPnP
	External netip.AddrPort // where the router forwards to the internal port
	Lifetime time.Duration  // as granted
}

// IsValid reports whether m is a mapping, not the zero Mapping that stands for none.
func (m Mapping) IsValid() bool { return m.External.IsValid() }

// String is "PROTOCOL EXTERNAL", or "none".
func (m Mapping) String() string {
	if !m.IsValid() {
		return "none"
	}
	return m.Protocol + " " + m.External.String()
}

// Config configures a Mapper.
type Config struct {
	// Gateway is the router's address; a zero port means ServerPort. Required.
	Gateway netip.AddrPort
	// InternalPort is the local UDP port to map. Required.
	InternalPort uint16
	// Lifetime is the lifetime to ask for; default DefaultLifetime, at most a day.
	Lifetime time.Duration
	// OnChange, if set, is called from the Mapper's goroutine whenever the external address changes:
	// a mapping was made or moved, or was lost (the zero Mapping). It must not call Close.
	OnChange func(Mapping)
	// Log, if set, receives a line for each change and the first failure (hclog.Logger's Info fits).
	Log func(msg string, args ...any)
	// Timeout is the first wait for an answer, doubled on each of Tries tries; defaults 250 ms and 4.
	Timeout time.Duration
	Tries   int

	clock clock            // tests set a fake one; nil = the real clock
	ssdp  []netip.AddrPort // where SSDP searches go; nil = SSDP's multicast group and the gateway's port 1900
}

// clock is the time the renewal schedule runs on.
type clock interface {
	Now() time.Time
	After(time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Mapper keeps one mapping of a UDP port on the router: made at Start, renewed at half its lifetime,
// made again after failures (30 s, doubling up to 10 min), deleted on Close.
type Mapper struct {
	cfg    Config
	nonce  [12]byte // PCP's mapping nonce, the same for every renewal and the delete
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex
	current Mapping
	expires time.Time
	proto   string // the protocol that worked last; "" = try PCP first

	igd *igd // the gateway's UPnP service once found; the run goroutine's (then Close's) alone
}

// Start checks cfg and starts the Mapper's goroutine, which maps the port at once.
func Start(cfg Config) (*Mapper, error) {
	if !cfg.Gateway.Addr().Is4() {
		return nil, fmt.Errorf("portmap: gateway %s: want an IPv4 address", cfg.Gateway.Addr())
	}
	if cfg.InternalPort == 0 {
		return nil, errors.New("portmap: no internal port")
	}
	if cfg.Gateway.Port() == 0 {
		cfg.Gateway = netip.AddrPortFrom(cfg.Gateway.Addr(), ServerPort)
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	cfg.Lifetime = min(cfg.Lifetime, 24*time.Hour)
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Tries <= 0 {
		cfg.Tries = defaultTries
	}
	cfg.Tries = min(cfg.Tries, 8)
	if cfg.clock == nil {
		cfg.clock = realClock{}
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	m := &Mapper{cfg: cfg, done: make(chan struct{})}
	rand.Read(m.nonce[:])
	m.ctx, m.cancel = context.WithCancel(context.Background())
	go m.run()
	return m, nil
}

// Current returns the mapping in force, or the zero Mapping.
func (m *Mapper) Current() Mapping {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}

// Close stops the Mapper and deletes its mapping on the router, waiting at most about a second for
// the router to confirm. Idempotent.
func (m *Mapper) Close() error {
	var err error
	m.once.Do(func() {
		m.cancel()
		<-m.done
		m.mu.Lock()
		cur := m.current
		m.current = Mapping{}
		m.mu.Unlock()
		if cur.IsValid() {
			err = m.delete(cur)
		}
	})
	return err
}

// run maps the port, then renews it at half its lifetime until Close.
func (m *Mapper) run() {
	defer close(m.done)
	retry := minRetry
	failed := false
	for {
		mp, err := m.mapPort(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		var wait time.Duration
		if err != nil {
			if !failed {
				m.cfg.Log("port mapping failed; retrying", "gateway", m.cfg.Gateway, "error", err)
			}
			failed = true
			m.expire()
			wait, retry = retry, min(2*retry, maxRetry)
		} else {
			failed = false
			m.set(mp)
			wait, retry = max(mp.Lifetime/2, minRenew), minRetry
		}
		select {
		case <-m.ctx.Done():
			return
		case <-m.cfg.clock.After(wait):
		}
	}
}

// set records a mapping that was made or renewed.
func (m *Mapper) set(mp Mapping) {
	m.mu.Lock()
	changed := mp.External != m.current.External || mp.Protocol != m.current.Protocol
	m.current, m.expires, m.proto = mp, m.cfg.clock.Now().Add(mp.Lifetime), mp.Protocol
	m.mu.Unlock()
	if changed {
		m.cfg.Log("port mapped", "protocol", mp.Protocol, "external", mp.External, "lifetime", mp.Lifetime)
		m.notify(mp)
	}
}

// expire drops the mapping once its lifetime is over; a renewal failed.
func (m *Mapper) expire() {
	m.mu.Lock()
	m.proto = "" // start over with PCP
	if !m.current.IsValid() || m.cfg.clock.Now().Before(m.expires) {
		m.mu.Unlock()
		return
	}
	m.current = Mapping{}
	m.mu.Unlock()
	m.igd = nil // discover the gateway's service again
	m.cfg.Log("port mapping expired")
	m.notify(Mapping{})
}

func (m *Mapper) notify(mp Mapping) {
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(mp)
	}
}

// mapPort makes or renews the mapping with the protocol that worked last, else PCP, then NAT-PMP
// (PCP unanswered or UNSUPP_VERSION), then UPnP-IGD (NAT-PMP unanswered too).
func (m *Mapper) mapPort(ctx context.Context) (Mapping, error) {
	m.mu.Lock()
	proto, prev := m.proto, m.current.External
	m.mu.Unlock()
	lifetime := seconds(m.cfg.Lifetime)
	if proto == ProtoUPnP {
		return m.upnpMap(ctx, lifetime)
	}
	if proto != ProtoNATPMP {
		mp, err := m.pcp(ctx, prev, lifetime, m.cfg.Tries)
		if err == nil || proto == ProtoPCP || !(errors.Is(err, errUnsuppVersion) || errors.Is(err, errNoAnswer)) {
			return mp, err
		}
	}
	mp, err := m.natPMP(ctx, lifetime, m.cfg.Tries)
	if err == nil || proto == ProtoNATPMP || !errors.Is(err, errNoAnswer) {
		return mp, err
	}
	mp, uerr := m.upnpMap(ctx, lifetime)
	if uerr != nil {
		return mp, fmt.Errorf("%v; %w", err, uerr)
	}
	return mp, nil
}

// delete removes mapping cur on the router.
func (m *Mapper) delete(cur Mapping) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err error
	switch cur.Protocol {
	case ProtoPCP:
		_, err = m.pcp(ctx, cur.External, 0, deleteTries)
	case ProtoUPnP:
		err = m.upnpDelete(ctx)
	default:
		_, err = m.natPMP(ctx, 0, deleteTries)
	}
	if err != nil {
		return fmt.Errorf("portmap: delete %s: %w", cur, err)
	}
	return nil
}

// pcp sends a PCP MAP request for lifetime seconds (0 deletes), suggesting prev.
func (m *Mapper) pcp(ctx context.Context, prev netip.AddrPort, lifetime uint32, tries int) (Mapping, error) {
	conn, err := m.dial()
	if err != nil {
		return Mapping{}, err
	}
	defer conn.Close()
	client := netip.MustParseAddrPort(conn.LocalAddr().String()).Addr()
	req := pcpMapRequest(client, m.nonce, m.cfg.InternalPort, prev, lifetime)
	var r pcpResponse
	err = m.exchange(ctx, conn, req, tries, func(b []byte) (bool, error) {
		var err error
		if r, err = decodePCP(b); err != nil {
			return errors.Is(err, errUnsuppVersion), err
		}
		// A failure may come without MAP data; a success is ours only with our nonce and port.
		return r.Result != resultSuccess || (r.Nonce == m.nonce && r.Internal == m.cfg.InternalPort), nil
	})
	switch {
	case err != nil:
		return Mapping{}, fmt.Errorf("pcp: %w", err)
	case r.Result != resultSuccess:
		return Mapping{}, &ResultError{Protocol: ProtoPCP, Code: uint16(r.Result)}
	case lifetime == 0:
		return Mapping{}, nil
	case r.Lifetime == 0 || !r.External.Addr().Is4() || r.External.Addr().IsUnspecified() || r.External.Port() == 0:
		return Mapping{}, fmt.Errorf("pcp: unusable mapping %s for %d s", r.External, r.Lifetime)
	}
	return Mapping{Protocol: ProtoPCP, External: r.External, Lifetime: time.Duration(r.Lifetime) * time.Second}, nil
}

// natPMP asks a NAT-PMP server for its external address, then maps the port for lifetime seconds
// (0 deletes: then no address request).
func (m *Mapper) natPMP(ctx context.Context, lifetime uint32, tries int) (Mapping, error) {
	conn, err := m.dial()
	if err != nil {
		return Mapping{}, err
	}
	defer conn.Close()
	var ext netip.Addr
	if lifetime > 0 {
		r, err := m.pmpRequest(ctx, conn, pmpAddrRequest(), pmpOpAddr, tries)
		if err != nil {
			return Mapping{}, err
		}
		if ext = r.External; ext.IsUnspecified() {
			return Mapping{}, errors.New("nat-pmp: the router has no external address")
		}
	}
	r, err := m.pmpRequest(ctx, conn, pmpMapRequest(m.cfg.InternalPort, 0, lifetime), pmpOpMapUDP, tries)
	switch {
	case err != nil:
		return Mapping{}, err
	case r.Internal != m.cfg.InternalPort:
		return Mapping{}, fmt.Errorf("nat-pmp: answer for internal port %d, want %d", r.Internal, m.cfg.InternalPort)
	case lifetime == 0:
		return Mapping{}, nil
	case r.Lifetime == 0 || r.Mapped == 0:
		return Mapping{}, fmt.Errorf("nat-pmp: unusable mapping to port %d for %d s", r.Mapped, r.Lifetime)
	}
	return Mapping{Protocol: ProtoNATPMP, External: netip.AddrPortFrom(ext, r.Mapped), Lifetime: time.Duration(r.Lifetime) * time.Second}, nil
}

// pmpRequest sends one NAT-PMP request and returns the successful answer.
func (m *Mapper) pmpRequest(ctx context.Context, conn *net.UDPConn, req []byte, op byte, tries int) (pmpResponse, error) {
	var r pmpResponse
	err := m.exchange(ctx, conn, req, tries, func(b []byte) (bool, error) {
		var err error
		r, err = decodePMP(b, op)
		return err == nil, err
	})
	if err != nil {
		return r, fmt.Errorf("nat-pmp: %w", err)
	}
	if r.Result != resultSuccess {
		return r, &ResultError{Protocol: ProtoNATPMP, Code: r.Result}
	}
	return r, nil
}

// dial opens a UDP socket connected to the gateway: it receives only the gateway's answers.
func (m *Mapper) dial() (*net.UDPConn, error) {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(m.cfg.Gateway))
	if err != nil {
		return nil, fmt.Errorf("portmap: %w", err)
	}
	return conn, nil
}

// errNoAnswer: the gateway did not answer any try.
var errNoAnswer = errors.New("no answer")

// exchange sends req up to tries times, waiting Timeout, then twice as long each time, for an answer
// that accept takes (done true). Answers accept refuses with done false are not ours and are
// skipped; an error with done true ends the exchange with it.
func (m *Mapper) exchange(ctx context.Context, conn *net.UDPConn, req []byte, tries int, accept func([]byte) (done bool, err error)) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, pcpMaxLen+4) // one more word: an oversized answer is seen as one
	wait := m.cfg.Timeout
	var lastErr error
	for range tries {
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("send to %s: %w", m.cfg.Gateway, err)
		}
		deadline := time.Now().Add(wait)
		for ctx.Err() == nil {
			conn.SetReadDeadline(deadline)
			n, err := conn.Read(buf)
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				break
			}
			if err != nil {
				// ICMP port unreachable: nothing listens there; another try will not help.
				return fmt.Errorf("%s: %w (%v)", m.cfg.Gateway, errNoAnswer, err)
			}
			done, err := accept(buf[:n])
			if done {
				return err
			}
			lastErr = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait *= 2
	}
	if lastErr != nil {
		return fmt.Errorf("%s: %w (last answer: %v)", m.cfg.Gateway, errNoAnswer, lastErr)
	}
	return fmt.Errorf("%s: %w after %d tries", m.cfg.Gateway, errNoAnswer, tries)
}
