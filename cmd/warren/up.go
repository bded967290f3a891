package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/internal/flagfile"
	"github.com/warren-net/warren/internal/naming"
	"github.com/warren-net/warren/internal/webui"
	"github.com/warren-net/warren/node"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/tun"
)

func cmdUp(args []string) error {
	fs := newFlagSet("up", "up --coord HOST:PORT --name NAME [--socks 127.0.0.1:1080] [--expose tcp:22,tcp:8080] [--authkey KEY] [-- COMMAND [ARGS...]]\n\n"+
		"With a COMMAND, the node runs until the command exits, then leaves (an ephemeral node is removed\n"+
		"at once) and warren exits with the command's status. The command gets ALL_PROXY=socks5h://PROXY,\n"+
		"WARREN_PROXY=PROXY and WARREN_STATE=DIR, and not WARREN_AUTHKEY.")
	authKeyFlag := fs.String("authkey", "", "join this auth key's network at login, without a password (prefer WARREN_AUTHKEY or --authkey-file: other local users can see command lines)")
	authKeyFile := fs.String("authkey-file", "", "read the auth key from this `file`")
	ephemeral := fs.Bool("ephemeral", false, "the coord removes this node once it is offline (at once when it exits cleanly or on 'warren down')")
	state := stateFlag(fs)
	coordAddr := fs.String("coord", "", "coordination server `HOST[:PORT]` (port default 7400), or HOST[:PORT]#SHA256:… with the key it must have, as warren-coord prints it; several servers sharing one database and key, comma-separated, are tried in order (required)")
	coordKey := fs.String("coord-key", "", "coordination server key `fingerprint` to pin (default: trust on first use)")
	name := fs.String("name", "", "this node's `name` at its first login (a DNS label: 1-63 of a-z, 0-9, -; default: the host name made into one); the coordination server keeps it with the node's key, later changes go through 'warren rename'")
	socksAddr := fs.String("socks", "127.0.0.1:1080", "proxy `address` speaking SOCKS5 and HTTP (loopback only without --socks-user; empty disables)")
	httpAddr := fs.String("http", "", "an extra proxy `address` for HTTP-only clients (same rules as --socks)")
	proxyUser := fs.String("socks-user", "", "require this `user` name from proxy clients (SOCKS5 username/password, HTTP Basic)")
	fs.StringVar(proxyUser, "proxy-user", "", "same as --socks-user")
	proxyUsers := fs.String("proxy-users", "", "other local `users` (names or uids, comma-separated, or all) who may use the proxy; by default only this user and root (Linux)")
	proxyPassFile := fs.String("socks-password-file", "", "read the proxy password from this `file` (or set WARREN_PROXY_PASSWORD)")
	fs.StringVar(proxyPassFile, "proxy-password-file", "", "same as --socks-password-file")
	outProxy := fs.String("proxy", "", "HTTP proxy `URL` (http://[user:pass@]host:port) for reaching the coord and relays over TCP where UDP is blocked; default HTTPS_PROXY/https_proxy; none = never")
	overlayOnly := fs.Bool("overlay-only", false, "refuse proxy destinations outside the overlay instead of dialing them from this host (also the internet inside warren run)")
	packetPath := fs.Bool("packet-path", false, "carry proxied TCP, and TCP from the TUN device or warren run, as IP packets instead of one QUIC stream per connection (slower; for comparison)")
	allowLocal := fs.Bool("allow-local", false, "let proxy clients reach this host's own addresses (loopback, interfaces)")
	listen := fs.String("listen", ":0", "UDP `address` for peer and coord traffic")
	metricsAddr := fs.String("metrics", "", "also serve Prometheus metrics on http://`ADDR`/metrics (loopback only: 127.0.0.1:PORT or [::1]:PORT); they are always on the local API, GET /v1/metrics")
	noPortmap := fs.Bool("no-portmap", os.Getenv("WARREN_NO_PORTMAP") != "",
		"do not ask the home router to map the UDP port (PCP, NAT-PMP, UPnP-IGD); default true if $WARREN_NO_PORTMAP is set")
	noDirect := fs.Bool("no-direct", false, "send all peer traffic through the relay (no hole punching)")
	lowLatency := fs.Bool("low-latency", os.Getenv(lowLatencyEnv) != "",
		"keep the Go runtime's monitor thread awake between packets: faster round trips and about 40% more throughput, for about 100 wake-ups a second while idle (servers, CI, games; not on battery); default true with a COMMAND or if $WARREN_LOW_LATENCY is set")
	linkIdle := fs.Duration("link-idle", node.DefaultLinkIdle, "wind a peer link down after this long without traffic (no keep-alives; the next packet or connection brings it back through the relay at once, then direct); 0 = never")
	tunOn := fs.Bool("tun", false, "also bridge a kernel TUN device to the overlay, for apps that cannot use the proxy (Linux only; needs root or CAP_NET_ADMIN)")
	tunName := fs.String("tun-name", "warren0", "`name` of the TUN device (with --tun)")
	var expose listFlag
	fs.Var(&expose, "expose", "local services to expose on the virtual IP, e.g. `tcp:22,udp:27015`; a bare port is TCP (22 = tcp:22); tcp:PORT+proxy starts each connection with a PROXY v2 header naming the peer")
	var advertise listFlag
	fs.Var(&advertise, "advertise", "also offer peers this `IP:PORT` for the node's UDP socket, e.g. a port forward set up by hand on the router (a literal public address; repeatable or comma-separated)")
	webAddr := fs.String("web", "", "serve a status page on this loopback `address` (127.0.0.1:PORT; the URL it prints holds a secret), as 'warren web' does")
	coordTimeout := fs.Duration("coord-timeout", 30*time.Second, "how long to keep trying to reach the coordination server at start")
	logLevel := fs.String("log-level", "info", "log `level`: trace, debug, info, warn, error, off")
	logJSON := fs.Bool("log-json", false, "log as JSON lines")
	flagfile.Define(fs)
	args, command := splitCommand(args)
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("up: unexpected argument %q (put a command to run after --)", pos[0])
	}
	if err := flagfile.Apply(fs); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	level, err := logLevelFlag(*logLevel)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if len(command) > 0 && !flagSet(fs, "low-latency") {
		*lowLatency = true // a node that lives as long as a job never idles for long
	}
	if *lowLatency {
		if err := enterLowLatency(); err != nil { // re-executes warren, before anything is read or started
			return fmt.Errorf("up: %w", err)
		}
	}
	key, err := authKey(*authKeyFlag, *authKeyFile)
	if err != nil {
		return err
	}
	if *coordAddr == "" {
		return errors.New("up: --coord HOST:PORT is required")
	}
	if *coordAddr, *coordKey, err = coordTarget(*coordAddr, *coordKey); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if *name == "" {
		h, err := os.Hostname()
		if err != nil {
			return errors.New("up: --name is required")
		}
		*name = defaultNodeName(h)
	} else if err := naming.Node(*name); err != nil {
		return fmt.Errorf("up: --name: %w (a node name is a DNS label: 1-63 lower-case letters, digits and '-', not starting or ending with '-')", err)
	}
	tunDev := ""
	if *tunOn {
		if runtime.GOOS != "linux" { // say so before logging in; node.New would fail only once it has addresses
			return fmt.Errorf("up: --tun: %w (the proxy works everywhere)", tun.ErrUnsupported)
		}
		if *tunName == "" {
			return errors.New("up: --tun-name must not be empty")
		}
		tunDev = *tunName
	}
	ports, proxyHeader, err := parseExpose(expose)
	if err != nil {
		return err
	}
	advertised, err := parseAdvertise(advertise)
	if err != nil {
		return err
	}
	proxyPass, err := proxyPassword(*proxyUser, *proxyPassFile)
	if err != nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "warren", Level: level, JSONFormat: *logJSON, Output: os.Stderr})
	if lowLatencyActive() {
		log.Info("low latency: the Go runtime's monitor thread stays awake between packets", "GODEBUG", os.Getenv("GODEBUG"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(node.Config{
		StateDir: *state, Coord: *coordAddr, CoordKey: *coordKey, Name: *name, Listen: *listen,
		SOCKS: *socksAddr, HTTP: *httpAddr, ProxyUser: *proxyUser, ProxyPassword: proxyPass, ProxyUsers: *proxyUsers,
		OverlayOnly: *overlayOnly, AllowLocal: *allowLocal, PacketPathTCP: *packetPath,
		Expose: ports, ProxyHeader: proxyHeader, Logger: log, CoordTimeout: *coordTimeout, TUN: tunDev, NoDirect: *noDirect, LinkIdle: max(*linkIdle, 0), Proxy: *outProxy,
		AuthKey: key, Ephemeral: *ephemeral, Metrics: *metricsAddr,
		Advertise: advertised, Portmap: !*noPortmap,
	})
	if err != nil {
		return err
	}
	var web *webui.Server
	if *webAddr != "" { // bound before the login: a bad address fails here, leaving nothing on the coord
		if web, err = startWeb(*webAddr, localapi.NewClient(*state)); err != nil {
			return err
		}
		defer web.Close()
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	st := n.Status()
	fmt.Printf("warren node %q up: %s", st.Self.Name, joinAddrs(st.Self.IPs))
	if st.Self.SOCKS != "" {
		fmt.Printf(", SOCKS5/HTTP proxy on %s", st.Self.SOCKS)
	}
	if a := n.HTTPAddr(); a != nil {
		fmt.Printf(", HTTP proxy on %s", a)
	}
	if tunDev != "" {
		fmt.Printf(", TUN device %s", tunDev)
	}
	if n.Ephemeral() {
		fmt.Print(", ephemeral")
	}
	if a := n.MetricsAddr(); a != "" {
		fmt.Printf(", metrics on http://%s/metrics", a)
	}
	fmt.Println()
	if web != nil {
		fmt.Printf("web page: %s\n", web.URL())
	}
	return runUntilDone(ctx, n, log, *state, command)
}

// parseExpose reads --expose: [tcp:|udp:]PORT (a bare PORT is TCP), and tcp:PORT+proxy for a port whose local
// connections start with a PROXY protocol v2 header (returned in proxy).
func parseExpose(specs []string) (ports []node.Port, proxy []uint16, err error) {
	for _, s := range specs {
		spec, withProxy := strings.CutSuffix(s, "+proxy")
		proto, port, ok := strings.Cut(spec, ":")
		if !ok {
			proto, port = "tcp", spec
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 || (proto != "tcp" && proto != "udp") || (withProxy && proto != "tcp") {
			return nil, nil, fmt.Errorf("--expose %q: want tcp:PORT, tcp:PORT+proxy, udp:PORT or PORT (TCP) with PORT 1-65535", s)
		}
		ports = append(ports, node.Port{Proto: proto, Port: uint16(p)})
		if withProxy {
			proxy = append(proxy, uint16(p))
		}
	}
	return ports, proxy, nil
}

// parseAdvertise reads --advertise: literal IP:PORT addresses peers can reach the node's UDP socket
// at (node.CheckAdvertise), at most node.MaxAdvertise of them.
func parseAdvertise(specs []string) ([]netip.AddrPort, error) {
	if len(specs) > node.MaxAdvertise {
		return nil, fmt.Errorf("--advertise: %d addresses, at most %d", len(specs), node.MaxAdvertise)
	}
	var out []netip.AddrPort
	for _, s := range specs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("--advertise %q: want a literal IP:PORT such as 203.0.113.5:41641 or [2001:db8::1]:41641 (no host names)", s)
		}
		if err := node.CheckAdvertise(ap); err != nil {
			return nil, err
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return out, nil
}

func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	return err
}

// proxyPassword reads the proxy password from a file or the environment, never from the command line
// (where other users of the machine could read it in the process list).
func proxyPassword(user, file string) (string, error) {
	if user == "" {
		if file != "" {
			return "", errors.New("--socks-password-file needs --socks-user")
		}
		return "", nil
	}
	pass := os.Getenv("WARREN_PROXY_PASSWORD")
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("proxy password: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if pass == "" {
		return "", errors.New("--socks-user needs a password: --socks-password-file FILE or WARREN_PROXY_PASSWORD")
	}
	return pass, nil
}

// logLevelFlag reads --log-level; an unknown level is an error naming the valid ones, not silence.
func logLevelFlag(s string) (hclog.Level, error) {
	if l := hclog.LevelFromString(s); l != hclog.NoLevel {
		return l, nil
	}
	return hclog.NoLevel, fmt.Errorf("--log-level %q: want one of trace, debug, info, warn, error, off", s)
}

// defaultNodeName makes a node name from a host name: its first label, in lower case, each run of
// characters a name may not have turned into one '-', trimmed of '-' and cut to 63 characters;
// "node" if nothing is left. "DESKTOP-7QK2_PC" becomes "desktop-7qk2-pc".
func defaultNodeName(host string) string {
	host, _, _ = strings.Cut(host, ".")
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(host) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	if naming.Node(name) != nil {
		return "node"
	}
	return name
}
