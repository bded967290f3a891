// Command warren-coord is the coordination server: nodes log in to it, it keeps networks and
// memberships in a SQLite file under --data and tells nodes about their peers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/operator"
	"github.com/warren-net/warren/coord/relay"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	ver "github.com/warren-net/warren/internal/version"
	"github.com/warren-net/warren/internal/webui"
)

// version is set at build time with -ldflags "-X main.version=..." (make build and make release set
// `git describe`); version.String falls back to the module version the go command recorded.
var version = ver.Dev

const usage = `usage: warren-coord --listen HOST:PORT --data DIR [flags]

Runs the warren coordination server on one UDP port (QUIC): login, networks, peer
maps, NAT discovery (plus a second port, --probe-port) and, by default, the relay
for nodes without a direct path. Its identity key and SQLite database live in DIR;
the key fingerprint printed at start is what nodes pin with 'warren up --coord-key'.
With --db postgres://… the state lives in PostgreSQL instead, and several servers
may serve it at once (each with its own DIR holding a copy of one key.pem).

Operator commands, on the same data directory ('warren-coord help' for details):
  warren-coord nodes|networks|relays|blocks|audit --data DIR [--json]
  warren-coord node remove NAME|KEY --data DIR
  warren-coord network kick|ban|lock|delete|... NETWORK [NODE] --data DIR   (owner actions)
  warren-coord block add|remove CIDR --data DIR [--comment TEXT]
  warren-coord authkey create|list|revoke --data DIR ...   (auth keys for CI jobs, containers)
  warren-coord backup FILE --data DIR        (a consistent copy while the server runs)
They go through the running server's admin socket (DIR/admin.sock), or work on the
database directly when no server runs.

Print the version: warren-coord version

Load-test running servers with simulated nodes ('warren-coord loadtest -h'):
  warren-coord loadtest --coord HOST:PORT[,HOST:PORT] --nodes N [--networks-of K] [--churn R]

A relay on its own (no database), announced by the server with --relay:
  warren-coord relay --listen HOST:PORT [--key FILE]      ('warren-coord relay -h' for details)

flags:
`

func main() {
	noGSO()
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "warren-coord:", err)
		os.Exit(1)
	}
}

// noGSO turns quic-go's UDP segmentation offload off for this process unless QUIC_GO_DISABLE_GSO is
// set already. A coordination server or relay sends small control messages to thousands of
// connections: with GSO each send takes a 20 KB buffer from quic-go's pool instead of a 1.4 KB one,
// and at 3,000 nodes those pooled buffers were 73 MB of a 192 MB heap (a third of the RSS the
// memory goal allows at 10,000); without GSO the coord's RSS at 3,000 nodes fell from 472 to 399 MiB
// (BENCHMARKS.md, "Control plane under load").
func noGSO() {
	if _, set := os.LookupEnv("QUIC_GO_DISABLE_GSO"); !set {
		os.Setenv("QUIC_GO_DISABLE_GSO", "true")
	}
}

// serverGC sets the collector's target to 50% (GOGC=50) for a serving process unless GOGC is set.
// A coordination server's heap is mostly long-lived per-session state (quic-go and TLS connection
// state, goroutine stacks), so Go's default of 100% holds twice the live heap: at 10,000 idle nodes
// on SQLite the coord's RSS was 1,156–1,196 MiB with the default and 919–924 MiB at 50% (alternating
// runs, login 28–61 s against 32–40 s, fan-out p99 ≤ 348 ms, nothing missed; BENCHMARKS.md, "Control
// plane under load"). The price is more collector CPU while the heap grows; an idle coord allocates
// little, so it pays little.
func serverGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		if cmd := commands[args[0]]; cmd != nil {
			return cmd(args[1:], os.Stdout)
		}
		if args[0] == "help" {
			fmt.Print(adminUsage)
			return nil
		}
	}
	serverGC() // serving from here on: the coord or a standalone relay
	if len(args) > 0 && args[0] == "relay" {
		return cmdRelay(args[1:])
	}
	fs := flag.NewFlagSet("warren-coord", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	listen := fs.String("listen", "0.0.0.0:7400", "UDP `address` to serve on")
	listenTCPFlag := fs.String("listen-tcp", "", listenTCPUsage)
	data := fs.String("data", "", "data `dir`ectory (identity key, database); required")
	pool4 := fs.String("pool4", "100.64.0.0/10", "IPv4 `prefix` node addresses are allocated from")
	pool6 := fs.String("pool6", "fd7a:7761:7272::/48", "IPv6 ULA `prefix` node addresses are allocated from")
	probePort := fs.Int("probe-port", 0, "second UDP `port` on the same address for NAT discovery (0 = any free port, -1 = none)")
	noRelay := fs.Bool("no-relay", false, "do not relay traffic between nodes that have no direct path (standalone relays announced with --relay still do)")
	relayRate := fs.Int("relay-rate", relay.DefaultRate, "relayed `packets` per second allowed per node")
	var relays relayFlags
	fs.Var(&relays, "relay", "announce a standalone relay to nodes, `HOST:PORT=KEY` (KEY as 'warren-coord relay' prints it); repeatable, in order of preference (nodes log in to all; see README)")
	ephemeralTimeout := fs.Duration("ephemeral-timeout", coord.DefaultEphemeralTimeout, "remove an ephemeral node once it has been offline this `long`")
	blockList := fs.String("blocklist", "", "`file` of address ranges refused at login (one CIDR or IP a line, # comments); re-read when it changes or on SIGHUP (default DIR/"+defaultBlockFile+", created empty)")
	loginLimits := addLoginLimitFlags(fs)
	maxNetworks := fs.Int("max-networks-per-node", coord.DefaultMaxNetworksPerNode, fmt.Sprintf("networks one node may be in (at most %d)", control.MaxNetworks))
	maxNodes := fs.Int("max-nodes-per-network", coord.DefaultMaxNodesPerNetwork, fmt.Sprintf("members one network may have (at most %d)", control.MaxPeers))
	maxPending := fs.Int("max-pending-logins", coord.DefaultMaxPendingLogins, "connections that may be handshaking or logging in at once; more are refused")
	auditKeep := fs.Int("audit-keep", store.DefaultAuditKeep, "keep at most this many audit log `entries`")
	auditMaxAge := fs.String("audit-max-age", "90d", "drop audit log entries older than this `duration`, e.g. 720h or 90d")
	dbURL := fs.String("db", "", "a PostgreSQL `URL` (postgres://USER@HOST/DB) to keep the state in instead of DIR/warren.db; several coords may share one (see README, \"Several coordination servers\"); the password is best given in PGPASSWORD or ~/.pgpass, not the URL")
	coordID := fs.String("coord-id", "", "this server's `name` among the coords on one --db, stable across restarts (default HOSTNAME/LISTEN)")
	joinExpiry := fs.String("join-request-expiry", "7d", "drop a join request the network's owner has not approved or denied after this `duration`, e.g. 48h or 7d")
	quarantine := fs.String("address-quarantine", "7d", "keep a deleted node's overlay address out of use this `long`, e.g. 72h or 7d (0 = hand it out again at once)")
	webAddr := fs.String("web", "", "serve a read-only operator page (nodes, networks, relays) on this loopback `address`, 127.0.0.1:PORT; the URL it prints holds a secret")
	server := addServerFlags(fs)
	if done, err := server.parse(fs, args, ""); done {
		return err
	}
	if *data == "" {
		return errors.New("--data DIR is required")
	}
	limits, err := loginLimits.config()
	if err != nil {
		return err
	}
	if *maxNetworks < 1 || *maxNetworks > control.MaxNetworks || *maxNodes < 1 || *maxNodes > control.MaxPeers || *maxPending < 1 {
		return fmt.Errorf("--max-networks-per-node wants 1-%d, --max-nodes-per-network 1-%d, --max-pending-logins at least 1", control.MaxNetworks, control.MaxPeers)
	}
	if *ephemeralTimeout <= 0 {
		return fmt.Errorf("--ephemeral-timeout %v: want a positive duration", *ephemeralTimeout)
	}
	auditAge, err := parseExpiry(*auditMaxAge)
	if err != nil || *auditKeep < 1 {
		return fmt.Errorf("--audit-keep %d, --audit-max-age %q: want at least 1 entry and a positive duration", *auditKeep, *auditMaxAge)
	}
	joinAge, err := parseExpiry(*joinExpiry)
	if err != nil {
		return fmt.Errorf("--join-request-expiry %q: want a positive duration", *joinExpiry)
	}
	quarantineFor, err := parseQuarantine(*quarantine)
	if err != nil {
		return err
	}
	log := server.logger("warren-coord")
	pools, err := parsePools(*pool4, *pool6)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	key, _, err := identity.LoadOrCreate(filepath.Join(*data, "key.pem"))
	if err != nil {
		return err
	}
	location := dbPath(*data)
	if *dbURL != "" {
		if !store.IsPostgres(*dbURL) {
			return fmt.Errorf("--db %q: want a postgres:// or postgresql:// URL", *dbURL)
		}
		location = *dbURL
	} else if *coordID != "" {
		return errors.New("--coord-id needs --db: coords share state only through PostgreSQL")
	}
	st, err := store.Open(location, pools)
	if err != nil {
		return openError(*data, err)
	}
	if err := recordDB(*data, *dbURL); err != nil {
		st.Close()
		return err
	}
	if st.Postgres() && *coordID == "" {
		host, _ := os.Hostname()
		*coordID = host + "/" + *listen
	}
	defer st.Close()
	st.SetAddressQuarantine(quarantineFor)
	if *blockList == "" {
		if *blockList, err = defaultBlockList(*data); err != nil {
			return err
		}
	}
	if err := recordSettings(st, *blockList, *auditKeep, auditAge); err != nil {
		return err
	}
	pc, err := listenUDP(*listen)
	if err != nil {
		return err
	}
	var srvRef atomic.Pointer[*coord.Server]
	tcp, err := listenTCP(*listenTCPFlag, pc, key, blockedBy(&srvRef), log)
	if err != nil {
		pc.Close()
		return err
	}
	var probe net.PacketConn
	if *probePort >= 0 {
		paddr := &net.UDPAddr{IP: pc.LocalAddr().(*net.UDPAddr).IP, Port: *probePort}
		if probe, err = net.ListenUDP("udp", paddr); err != nil {
			pc.Close()
			if tcp != nil {
				tcp.Close()
			}
			return fmt.Errorf("--probe-port %d: %w", *probePort, err)
		}
	}
	srv, err := coord.New(coord.Config{Key: key, Store: st, Pools: st.Pools(), Conn: pc, TCP: tcp, Logger: log,
		ProbeConn: probe, NoRelay: *noRelay, RelayRate: *relayRate, Relays: relays, EphemeralTimeout: *ephemeralTimeout, BlockList: *blockList,
		LoginRateIP: limits.LoginRateIP, LoginBurstIP: limits.LoginBurstIP, LoginRateKey: limits.LoginRateKey, LoginBurstKey: limits.LoginBurstKey,
		MaxNetworksPerNode: *maxNetworks, MaxNodesPerNetwork: *maxNodes, MaxPendingLogins: *maxPending,
		JoinRequestExpiry: joinAge, CoordID: *coordID})
	if err != nil {
		pc.Close()
		if probe != nil {
			probe.Close()
		}
		if tcp != nil {
			tcp.Close()
		}
		return err
	}
	srvRef.Store(&srv)
	ops := operator.New(operator.Config{Store: st, Server: srv, Logger: log.Named("operator")})
	sock, err := operator.Listen(*data, ops, log.Named("operator"))
	if err != nil {
		srv.Close()
		return err
	}
	defer sock.Close() // on early returns; the normal path closes it before the server
	ms, err := server.serveMetrics(srv.Register, log)
	if err != nil {
		srv.Close()
		return err
	}
	if ms != nil {
		defer ms.Close()
	}
	var web *webui.Server
	if *webAddr != "" {
		if web, err = webui.Start(*webAddr, webui.CoordPage, coordWebAPI(ops)); err != nil {
			srv.Close()
			return fmt.Errorf("--web: %w", err)
		}
		defer web.Close()
	}
	fmt.Printf("warren-coord listening on %s\nkey %s\njoin with: warren up --coord %s\n", srv.Addr(), key.Fingerprint(), joinAddr(srv.Addr(), key.Fingerprint()))
	printMetrics(ms)
	if web != nil {
		fmt.Printf("web page: %s\n", web.URL())
	}
	log.Info("serving", "version", ver.String(version), "addr", srv.Addr().String(), "key", key.Fingerprint(), "data", *data, "relay", !*noRelay, "relays", relays.String(), "probe", probeAddr(probe), "tcp", tcpAddr(tcp), "db", st.String(), "coord_id", *coordID)

	waitForSignal(log, reloadWithTCP(srv.ReloadBlockList, srv.Blocked, tcp))
	log.Info("shutting down")
	sock.Close() // no admin requests while the server stops
	if web != nil {
		web.Close()
	}
	return srv.Close()
}

// commands are the operator's subcommands.
var commands = map[string]func([]string, io.Writer) error{
	"authkey": cmdAuthKey, "nodes": cmdNodes, "node": cmdNode, "networks": cmdNetworks, "network": cmdNetwork, "relays": cmdRelays,
	"blocks": cmdBlocks, "block": cmdBlock, "audit": cmdAudit, "backup": cmdBackup, "version": cmdVersion, "--version": cmdVersion,
	"loadtest": cmdLoadtest,
}

// cmdVersion prints the version.
func cmdVersion(args []string, w io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("version: unexpected argument %q", args[0])
	}
	_, err := fmt.Fprintln(w, "warren-coord", ver.String(version))
	return err
}

// defaultBlockList returns DIR/blocklist, creating it (empty but for a comment) if it is missing.
func defaultBlockList(dir string) (string, error) {
	path := filepath.Join(dir, defaultBlockFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return path, nil
	}
	if err != nil {
		return "", fmt.Errorf("create block list: %w", err)
	}
	_, err = f.WriteString("# Address ranges refused at login: one CIDR prefix or IP address a line, '#' comments.\n" +
		"# Edit with 'warren-coord block add|remove' or by hand; the server re-reads it within seconds.\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("create block list: %w", err)
	}
	return path, nil
}

// recordSettings writes what commands on the data directory need to know about this server: its
// block list file and audit log retention.
func recordSettings(st *store.Store, blockList string, auditKeep int, auditAge time.Duration) error {
	abs, err := filepath.Abs(blockList)
	if err != nil {
		return fmt.Errorf("--blocklist: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.SetSetting(ctx, operator.SettingBlockFile, abs); err != nil {
		return err
	}
	return st.SetAuditRetention(ctx, auditKeep, auditAge)
}

// joinAddr is the --coord value nodes should use: the address with the key, so that a node's first
// connection is pinned too. An unspecified listen address becomes HOST, for the operator to fill in.
func joinAddr(listen net.Addr, fingerprint string) string {
	addr := listen.String()
	if ua, ok := listen.(*net.UDPAddr); ok && ua.IP.IsUnspecified() {
		addr = net.JoinHostPort("HOST", strconv.Itoa(ua.Port))
	}
	return identity.PinnedAddr(addr, fingerprint)
}

func parsePools(v4, v6 string) (store.Pools, error) {
	p4, err := netip.ParsePrefix(v4)
	if err != nil || !p4.Addr().Is4() {
		return store.Pools{}, fmt.Errorf("--pool4 %q: want an IPv4 prefix like 100.64.0.0/10", v4)
	}
	p6, err := netip.ParsePrefix(v6)
	if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() {
		return store.Pools{}, fmt.Errorf("--pool6 %q: want an IPv6 prefix like fd7a:7761:7272::/48", v6)
	}
	// Nodes refuse overlay prefixes outside the fixed ranges (control.InOverlayRange): say so here,
	// at start, rather than have every node refuse its Welcome.
	if !control.InOverlayRange(p4) {
		return store.Pools{}, fmt.Errorf("--pool4 %v: must lie inside %v (nodes refuse any other overlay prefix)", p4, control.OverlayRange4)
	}
	if !control.InOverlayRange(p6) {
		return store.Pools{}, fmt.Errorf("--pool6 %v: must lie inside %v (nodes refuse any other overlay prefix)", p6, control.OverlayRange6)
	}
	return store.Pools{V4: p4.Masked(), V6: p6.Masked()}, nil
}

func probeAddr(pc net.PacketConn) string {
	if pc == nil {
		return "off"
	}
	return pc.LocalAddr().String()
}

// dbURLFile, in the data directory, holds the --db URL of a server on PostgreSQL, so that operator
// commands on DIR open the same database when no server runs. It is 0600 like the key beside it
// (the URL may carry a password).
const dbURLFile = "db.url"

// recordDB writes url to DIR/db.url, or removes the file when the server runs on DIR/warren.db.
func recordDB(dir, url string) error {
	path := filepath.Join(dir, dbURLFile)
	if url == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	if err := os.WriteFile(path, []byte(url+"\n"), 0o600); err != nil {
		return fmt.Errorf("record --db: %w", err)
	}
	return nil
}

// parseQuarantine reads --address-quarantine: a duration like 72h or 7d, or 0 (in any unit) for none.
func parseQuarantine(v string) (time.Duration, error) {
	if q := strings.TrimRight(v, "smhd"); q == "0" {
		return 0, nil
	}
	d, err := parseExpiry(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--address-quarantine %q: want a duration like 72h or 7d, or 0 for none", v)
	}
	return d, nil
}
