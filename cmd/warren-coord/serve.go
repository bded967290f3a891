// What the server command and the relay command share: logging, --config, the login rate limit flags,
// the UDP socket and running until a signal.

package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/flagfile"
	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/internal/tcptun"
)

// serverFlags are the flags the coordination server and the standalone relay share beyond their
// own: logging, metrics and --config.
type serverFlags struct {
	logLevel *string
	logJSON  *bool
	metrics  *string
}

func addServerFlags(fs *flag.FlagSet) serverFlags {
	f := serverFlags{
		logLevel: fs.String("log-level", "info", "log `level`: trace, debug, info, warn, error, off"),
		logJSON:  fs.Bool("log-json", false, "log as JSON lines"),
		metrics:  fs.String("metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics (loopback only: 127.0.0.1:PORT or [::1]:PORT; default off)"),
	}
	flagfile.Define(fs)
	return f
}

// parse parses the command line, which takes no arguments, then the --config file, and checks
// --log-level. It reports done
// after -h (the usage is printed); errors other than the command line's own begin with prefix.
func (f serverFlags) parse(fs *flag.FlagSet, args []string, prefix string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, err
	}
	if fs.NArg() > 0 {
		return true, fmt.Errorf("%sunexpected argument %q", prefix, fs.Arg(0))
	}
	if err := flagfile.Apply(fs); err != nil {
		return true, fmt.Errorf("%s%w", prefix, err)
	}
	if hclog.LevelFromString(*f.logLevel) == hclog.NoLevel {
		return true, fmt.Errorf("%s--log-level %q: want one of trace, debug, info, warn, error, off", prefix, *f.logLevel)
	}
	if *f.metrics != "" {
		if err := metrics.CheckLoopback(*f.metrics); err != nil {
			return true, fmt.Errorf("%s--metrics: %w", prefix, err)
		}
	}
	return false, nil
}

// serveMetrics serves --metrics, if set, with the collectors register adds; nil without the flag.
// The caller prints its address (printMetrics) after its own first line.
func (f serverFlags) serveMetrics(register func(*metrics.Registry), log hclog.Logger) (*metrics.Server, error) {
	if *f.metrics == "" {
		return nil, nil
	}
	reg := metrics.New()
	register(reg)
	ms, err := metrics.Listen(*f.metrics, reg.Handler())
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	log.Info("serving metrics", "addr", "http://"+ms.Addr().String()+"/metrics")
	return ms, nil
}

// logger returns the logger the flags ask for, named name, writing to stderr.
func (f serverFlags) logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(*f.logLevel), JSONFormat: *f.logJSON, Output: os.Stderr})
}

// listenUDP opens the UDP socket --listen names.
func listenUDP(listen string) (*net.UDPConn, error) {
	uaddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	pc, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return pc, nil
}

// loginLimitFlags are the login rate limit flags of the coordination server and the standalone relay
// (same names, defaults and meaning: package abuse's Guard enforces both).
type loginLimitFlags struct {
	rateIP, rateKey   *float64
	burstIP, burstKey *int
}

func addLoginLimitFlags(fs *flag.FlagSet) loginLimitFlags {
	return loginLimitFlags{
		rateIP:   fs.Float64("login-rate-ip", float64(abuse.DefaultLoginRateIP), "logins per second allowed per source address (IPv6: per /64; loopback exempt; 0 = no limit)"),
		burstIP:  fs.Int("login-burst-ip", abuse.DefaultLoginBurstIP, "logins one source address may make at once before --login-rate-ip applies"),
		rateKey:  fs.Float64("login-rate-key", float64(abuse.DefaultLoginRateKey), "logins per second allowed per node identity (0 = no limit)"),
		burstKey: fs.Int("login-burst-key", abuse.DefaultLoginBurstKey, "logins one identity may make at once before --login-rate-key applies"),
	}
}

// config validates the flags and returns them as a Guard's limits.
func (f loginLimitFlags) config() (abuse.GuardConfig, error) {
	if *f.rateIP < 0 || *f.rateKey < 0 || *f.burstIP < 1 || *f.burstKey < 1 {
		return abuse.GuardConfig{}, errors.New("--login-rate-* must be >= 0 and --login-burst-* >= 1")
	}
	return abuse.GuardConfig{LoginRateIP: loginLimit(*f.rateIP), LoginBurstIP: *f.burstIP,
		LoginRateKey: loginLimit(*f.rateKey), LoginBurstKey: *f.burstKey}, nil
}

// loginLimit maps the flag's 0 (no limit) to rate.Inf.
func loginLimit(perSecond float64) rate.Limit {
	if perSecond == 0 {
		return rate.Inf
	}
	return rate.Limit(perSecond)
}

// waitForSignal blocks until SIGINT or SIGTERM; on SIGHUP meanwhile it runs reloadBlockList (the
// server's or the relay's ReloadBlockList).
func waitForSignal(log hclog.Logger, reloadBlockList func() error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := reloadBlockList(); err != nil {
				log.Warn("block list not reloaded; keeping the old one", "error", err)
			}
		}
	}
}

// listenTCPUsage is --listen-tcp's help, the same for the server and the relay.
const listenTCPUsage = "TCP `address` for nodes whose UDP is blocked (TLS, QUIC packets framed on the stream); " +
	"default the UDP --listen address's port; a bare port means all addresses; \"off\" = none"

// listenTCP opens the TCP fallback --listen-tcp names (spec; "" = the UDP socket's address, "off" =
// none) and serves it as a packet socket with the server's identity: nil, nil when off. Each stream's
// source address must pass allow (the server's block list) before its handshake.
//
// A default address (spec "") that is taken by another program is not fatal: the server runs
// without the fallback and log says so; an address the operator named must work.
func listenTCP(spec string, udp *net.UDPConn, key *identity.Key, allow func(netip.Addr) bool, log hclog.Logger) (net.PacketConn, error) {
	named := spec != ""
	switch {
	case spec == "off":
		return nil, nil
	case spec == "":
		spec = udp.LocalAddr().String()
	case !strings.Contains(spec, ":"):
		spec = ":" + spec
	}
	ln, err := net.Listen("tcp", spec)
	if err != nil && !named {
		log.Warn("no TCP fallback: the UDP port's TCP twin is taken; nodes whose UDP is blocked cannot reach this server (name a free one with --listen-tcp, or say --listen-tcp off)",
			"addr", spec, "error", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--listen-tcp %q: %w", spec, err)
	}
	tlsConf, err := identity.TLSConfig(key, tcptun.ALPN, true, func(ed25519.PublicKey) error { return nil })
	if err != nil {
		ln.Close()
		return nil, err
	}
	return tcptun.NewServer(tcptun.ServerConfig{Listener: ln, TLS: tlsConf, Local: udp.LocalAddr(), Allow: allow}), nil
}

// blockedBy is listenTCP's allow for a server made after the listener: nothing passes until it exists,
// then what its block list does not name.
func blockedBy[S interface{ Blocked(netip.Addr) bool }](srv *atomic.Pointer[S]) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		s := srv.Load()
		return s != nil && !(*s).Blocked(a)
	}
}

// reloadWithTCP is a server's ReloadBlockList that also closes the TCP fallback's streams from
// addresses the new list blocks (their sessions come from synthetic addresses the list cannot name).
func reloadWithTCP(reload func() error, blocked func(netip.Addr) bool, tcp net.PacketConn) func() error {
	return func() error {
		err := reload()
		if ts, ok := tcp.(*tcptun.Server); ok {
			ts.CloseFrom(blocked)
		}
		return err
	}
}

// tcpAddr is the TCP fallback's address for the log ("off" without one).
func tcpAddr(tcp net.PacketConn) string {
	if s, ok := tcp.(*tcptun.Server); ok {
		return s.ListenAddr().String()
	}
	return "off"
}

// printMetrics prints where metrics are served, if they are.
func printMetrics(ms *metrics.Server) {
	if ms != nil {
		fmt.Printf("metrics on http://%s/metrics\n", ms.Addr())
	}
}
