package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/relay"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/metrics"
)

const relayUsage = `usage: warren-coord relay --listen HOST:PORT [--key FILE] [flags]

Runs a standalone relay: no database, no membership data. Nodes log in to it with
their identity keys and name the peers they consent to; it forwards their end-to-end
encrypted packets only between two logged-in nodes that name each other. Its key
(created in FILE on first run) is printed at start; announce the relay to nodes with
'warren-coord --relay HOST:PORT=KEY' on the coordination server. Abuse controls as the
server's: --blocklist FILE (re-read when it changes or on SIGHUP) and login rate limits.

flags:
`

// cmdRelay runs 'warren-coord relay ...' until SIGINT or SIGTERM.
func cmdRelay(args []string) error {
	fs := flag.NewFlagSet("warren-coord relay", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), relayUsage); fs.PrintDefaults() }
	listen := fs.String("listen", "0.0.0.0:7401", "UDP `address` to serve on")
	listenTCPFlag := fs.String("listen-tcp", "", listenTCPUsage)
	keyFile := fs.String("key", defaultRelayKey(), "identity key `file` (created on first run)")
	relayRate := fs.Int("relay-rate", relay.DefaultRate, "relayed `packets` per second allowed per node")
	maxNodes := fs.Int("max-nodes", 10000, "`nodes` logged in at once; more are refused")
	maxPerIP := fs.Int("max-per-ip", 256, "`nodes` logged in at once from one IPv4 address or IPv6 /64")
	maxPending := fs.Int("max-pending-logins", 1024, "connections that may be handshaking or logging in at once (a quarter per address); more are refused")
	blockList := fs.String("blocklist", "", "`file` of address ranges refused: logins, relay frames, binding requests (one CIDR or IP a line, # comments); re-read when it changes or on SIGHUP (default none)")
	loginLimits := addLoginLimitFlags(fs)
	server := addServerFlags(fs)
	if done, err := server.parse(fs, args, "relay: "); done {
		return err
	}
	if *relayRate <= 0 || *maxNodes <= 0 || *maxPerIP <= 0 || *maxPending <= 0 {
		return errors.New("relay: --relay-rate, --max-nodes, --max-per-ip and --max-pending-logins must be positive")
	}
	limits, err := loginLimits.config()
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	log := server.logger("warren-relay")
	if err := os.MkdirAll(filepath.Dir(*keyFile), 0o700); err != nil {
		return fmt.Errorf("relay: key directory: %w", err)
	}
	key, created, err := identity.LoadOrCreate(*keyFile)
	if err != nil {
		return err
	}
	if created {
		log.Info("created identity key", "file", *keyFile)
	}
	pc, err := listenUDP(*listen)
	if err != nil {
		return err
	}
	var srvRef atomic.Pointer[*relay.Server]
	tcp, err := listenTCP(*listenTCPFlag, pc, key, blockedBy(&srvRef), log)
	if err != nil {
		pc.Close()
		return err
	}
	srv, err := relay.NewServer(relay.ServerConfig{Key: key, Conn: pc, TCP: tcp, Logger: log, Rate: *relayRate, MaxNodes: *maxNodes, MaxPerIP: *maxPerIP, MaxPending: *maxPending,
		BlockList: *blockList, LoginRateIP: limits.LoginRateIP, LoginBurstIP: limits.LoginBurstIP,
		LoginRateKey: limits.LoginRateKey, LoginBurstKey: limits.LoginBurstKey})
	if err != nil {
		pc.Close()
		if tcp != nil {
			tcp.Close()
		}
		return err
	}
	srvRef.Store(&srv)
	ms, err := server.serveMetrics(func(r *metrics.Registry) { r.Register(srv.Collector()) }, log)
	if err != nil {
		srv.Close()
		return err
	}
	if ms != nil {
		defer ms.Close()
	}
	fmt.Printf("warren-coord relay listening on %s\nkey %s\n", srv.Addr(), key.Fingerprint())
	printMetrics(ms)
	log.Info("serving", "addr", srv.Addr().String(), "key", key.Fingerprint(), "tcp", tcpAddr(tcp))
	waitForSignal(log, reloadWithTCP(srv.ReloadBlockList, srv.Blocked, tcp))
	log.Info("shutting down")
	return srv.Close()
}

// defaultRelayKey is the relay's key file when --key is not given: under the user's config directory.
func defaultRelayKey() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "warren-relay", "key.pem")
}

// relayFlags collects repeated --relay HOST:PORT=KEY flags.
type relayFlags []control.Relay

func (r *relayFlags) String() string {
	parts := make([]string, len(*r))
	for i, x := range *r {
		parts[i] = x.Addr.String() + "=" + x.Key
	}
	return strings.Join(parts, ",")
}

func (r *relayFlags) Set(v string) error {
	addr, fp, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want HOST:PORT=KEY (the key fingerprint 'warren-coord relay' prints), got %q", v)
	}
	if len(*r) == control.MaxRelays {
		return fmt.Errorf("at most %d relays", control.MaxRelays)
	}
	key, err := identity.ParseFingerprint(fp)
	if err != nil {
		return err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("relay address %q: %w", addr, err)
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return fmt.Errorf("relay address %q: want a host and port that nodes can reach", addr)
	}
	*r = append(*r, control.Relay{Addr: ap, Key: key})
	return nil
}
