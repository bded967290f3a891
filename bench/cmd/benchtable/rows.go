package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/bench/internal/load"
)

// target is one row's path to the load server, ready to measure.
type target struct {
	dial  load.DialFunc
	socks bool    // connections go through a SOCKS5 proxy (new connections per second is measured)
	vpn   []*proc // the VPN processes whose CPU time and memory are reported
	// udp opens a path to the load server's UDP echo (nil: the row has none).
	udp func(ctx context.Context) (load.UDPPath, error)
}

// bench owns the child processes and the temp dir of one benchmark run.
type bench struct {
	opts     options
	dir      string
	self     string // this binary (the load server's -serve-load mode)
	procs    []*proc
	cleanups []func() // run after the processes stop, newest first (network namespaces)
	nsPairs  int      // network namespace pairs made so far
}

// start launches a child process that the bench stops in close.
func (b *bench) start(name, bin string, env []string, args ...string) (*proc, error) {
	p, err := startProc(b.dir, name, bin, env, args...)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

// stopAll stops every child started so far, newest first, then runs the cleanups.
func (b *bench) stopAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop(3 * time.Second)
	}
	b.procs = nil
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// appEnv is the environment of the load server, which stands for an app like the driver
// (-apps-awake).
func (b *bench) appEnv() []string {
	if b.opts.appsAwake {
		return []string{godebugAwake}
	}
	return nil
}

// startLoad runs the load server as its own process (this binary in -serve-load mode) and returns
// its address.
func (b *bench) startLoad(ctx context.Context, self string) (netip.AddrPort, error) {
	p, err := b.start("load", self, b.appEnv(), "-serve-load", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, err
	}
	l, err := p.line(ctx, 10*time.Second)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(l, "listening "))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("load server said %q: %w", l, err)
	}
	return ap, nil
}

// direct is the ceiling: plain loopback TCP from the driver to the load server process.
func (b *bench) direct(ctx context.Context, loadAddr netip.AddrPort) target {
	var d net.Dialer
	return target{dial: func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", loadAddr.String())
	}, udp: func(context.Context) (load.UDPPath, error) { return load.DialUDP(loadAddr) }}
}

// Tunnel addresses of the two wireguard-go peers (a private range that never leaves their netstacks).
var (
	wgAddrA = netip.MustParseAddr("10.201.0.1")
	wgAddrB = netip.MustParseAddr("10.201.0.2")
)

const wgLoadPort = 9000

// peer is the comparison: two wgpeer processes, B serving the load server in its netstack, A
// serving SOCKS5 into its netstack; the client connects through A's SOCKS5. v sets both
// processes' GOMAXPROCS and runtime setting (variant.peerEnv). With forward (the peer-fwd row), B
// instead forwards its netstack port to the load server process at forward, as warren's node B
// dials the exposed service.
func (b *bench) peer(ctx context.Context, v variant, forward netip.AddrPort) (target, error) {
	name := v.name
	privA, pubA, err := wgKeyPair()
	if err != nil {
		return target{}, err
	}
	privB, pubB, err := wgKeyPair()
	if err != nil {
		return target{}, err
	}
	portA, err1 := freePort("udp")
	portB, err2 := freePort("udp")
	socksPort, err3 := freePort("tcp")
	if err := errors.Join(err1, err2, err3); err != nil {
		return target{}, err
	}
	mtu := strconv.Itoa(b.opts.wgMTU)
	argsB := []string{"--addr", wgAddrB.String(), "--peer-addr", wgAddrA.String(), "--peer-key", pubA,
		"--listen-port", strconv.Itoa(portB), "--endpoint", fmt.Sprintf("127.0.0.1:%d", portA),
		"--mtu", mtu, "--serve", strconv.Itoa(wgLoadPort)}
	if forward.IsValid() {
		argsB = append(argsB, "--forward", forward.String())
	}
	pb, err := b.start(name+"-b", b.opts.wgpeer, append([]string{"WGPEER_PRIVATE_KEY=" + privB}, v.peerEnv()...), argsB...)
	if err != nil {
		return target{}, err
	}
	socksAddr := fmt.Sprintf("127.0.0.1:%d", socksPort)
	pa, err := b.start(name+"-a", b.opts.wgpeer, append([]string{"WGPEER_PRIVATE_KEY=" + privA}, v.peerEnv()...),
		"--addr", wgAddrA.String(), "--peer-addr", wgAddrB.String(), "--peer-key", pubB,
		"--listen-port", strconv.Itoa(portA), "--endpoint", fmt.Sprintf("127.0.0.1:%d", portB),
		"--mtu", mtu, "--socks", socksAddr)
	if err != nil {
		return target{}, err
	}
	for _, p := range []*proc{pa, pb} {
		if l, err := p.line(ctx, 10*time.Second); err != nil || l != "ready" {
			return target{}, fmt.Errorf("%s not ready (said %q): %v", p.name, l, err)
		}
	}
	dest := netip.AddrPortFrom(wgAddrB, wgLoadPort)
	dial, err := socksDialer(socksAddr, dest)
	if err != nil {
		return target{}, err
	}
	return target{dial: dial, socks: true, vpn: []*proc{pa, pb}, udp: socksUDP(socksAddr, dest)}, nil
}

// warren runs the real binaries from bin: a coord and two nodes on loopback in one network; node B
// exposes the load server's port, the client connects through node A's SOCKS5 to B's virtual IP.
// extra arguments go to both `warren up` commands (e.g. the packet path flag).
func (b *bench) warren(ctx context.Context, bin string, loadAddr netip.AddrPort, name string, extra ...string) (target, error) {
	socksPort, err := freePort("tcp")
	if err != nil {
		return target{}, err
	}
	socksAddr := fmt.Sprintf("127.0.0.1:%d", socksPort)
	pair, err := b.warrenPair(ctx, bin, loadAddr, name, socksAddr, extra...)
	if err != nil {
		return target{}, err
	}
	dial, err := socksDialer(socksAddr, pair.dest)
	if err != nil {
		return target{}, err
	}
	return target{dial: dial, socks: true, vpn: pair.vpn, udp: socksUDP(socksAddr, pair.dest)}, nil
}

// nodePair is what warrenPair starts: the two nodes, node A's state dir, and the load server's
// address on B's virtual IP.
type nodePair struct {
	vpn    []*proc
	stateA string
	dest   netip.AddrPort
}

// warrenPair starts a coord and two nodes from bin on loopback in one network, node A with its
// SOCKS5 on socksA ("" for none), node B exposing the load server's port (TCP and UDP); extra
// arguments go to both `warren up` commands.
func (b *bench) warrenPair(ctx context.Context, bin string, loadAddr netip.AddrPort, name, socksA string, extra ...string) (nodePair, error) {
	warren := filepath.Join(bin, "warren")
	dir := filepath.Join(b.dir, name)
	_, coordAddr, coordKey, err := b.startCoord(ctx, name, bin, dir)
	if err != nil {
		return nodePair{}, err
	}
	stateA, stateB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	// --link-idle 0 (also warrenTun's): measured in turns, a row's nodes sit idle between its runs
	// for longer than the default 2 minutes; the rows measure a live link, not the wake-up (first
	// through the relay, then direct; before 3896c9e a connection opened during it stayed on the
	// relay, and the 1-stream column measured the relay's rate bound, 0.21 Gbit/s, stop 30). The
	// idle-cost nodes run as shipped.
	common := []string{"up", "--coord", coordAddr, "--coord-key", coordKey, "--listen", "127.0.0.1:0", "--log-level", "warn", "--link-idle", "0"}
	pa, err := b.start(name+"-a", warren, nil, append(append(common, "--name", "a", "--state", stateA, "--socks", socksA), extra...)...)
	if err != nil {
		return nodePair{}, err
	}
	pb, err := b.start(name+"-b", warren, nil, append(append(common, "--name", "b", "--state", stateB, "--socks", "",
		"--expose", fmt.Sprintf("tcp:%d,udp:%d", loadAddr.Port(), loadAddr.Port())), extra...)...)
	if err != nil {
		return nodePair{}, err
	}
	path := "direct"
	if slices.Contains(extra, "--no-direct") {
		path = "relay"
	}
	ipB, err := b.joinPair(ctx, warren, stateA, stateB, path)
	if err != nil {
		return nodePair{}, err
	}
	return nodePair{vpn: []*proc{pa, pb}, stateA: stateA, dest: netip.AddrPortFrom(ipB, loadAddr.Port())}, nil
}

// startCoord starts a warren-coord from bin on loopback with its data in dir/coord, and returns it
// with its address and key.
func (b *bench) startCoord(ctx context.Context, name, bin, dir string) (coord *proc, addr, key string, err error) {
	coord, err = b.start(name+"-coord", filepath.Join(bin, "warren-coord"), nil,
		"--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "coord"), "--log-level", "warn")
	if err != nil {
		return nil, "", "", err
	}
	addr, key, err = coordHello(ctx, coord)
	return coord, addr, key, err
}

// coordHello reads warren-coord's first two lines: its address and its key.
func coordHello(ctx context.Context, coord *proc) (addr, key string, err error) {
	l1, err := coord.line(ctx, 15*time.Second)
	if err != nil {
		return "", "", err
	}
	l2, err := coord.line(ctx, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	addr, ok1 := strings.CutPrefix(l1, "warren-coord listening on ")
	key, ok2 := strings.CutPrefix(l2, "key ")
	if !ok1 || !ok2 {
		return "", "", fmt.Errorf("unexpected warren-coord output %q, %q", l1, l2)
	}
	return addr, key, nil
}

// joinPair waits for the nodes with states stateA and stateB, puts them in one network and waits
// until A's link to B takes path ("direct", or "relay" for nodes with --no-direct); it returns
// B's overlay IPv4.
func (b *bench) joinPair(ctx context.Context, warren, stateA, stateB, path string) (netip.Addr, error) {
	for _, st := range []string{stateA, stateB} {
		if _, err := b.waitStatus(ctx, warren, st, nil); err != nil {
			return netip.Addr{}, err
		}
	}
	const pw = "bench-password"
	if err := runCLI(ctx, warren, "network", "create", "bench", "--password", pw, "--state", stateA); err != nil {
		return netip.Addr{}, err
	}
	if err := runCLI(ctx, warren, "network", "join", "bench", "--password", pw, "--state", stateB); err != nil {
		return netip.Addr{}, err
	}
	st, err := b.waitStatus(ctx, warren, stateA, func(st nodeStatus) bool { return len(st.Peers) == 1 && st.Peers[0].Path == path })
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ip := range st.Peers[0].IPs {
		if ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node b has no IPv4 in node a's status: %v", st.Peers[0].IPs)
}

// packetPathFlag returns the `warren up` flag that sends proxied TCP over the packet path, or ""
// if this build of warren has none (node.Config.PacketPathTCP is then reachable only in-process).
func packetPathFlag(ctx context.Context, warren string) string {
	out, _ := exec.CommandContext(ctx, warren, "up", "--help").CombinedOutput() // exits non-zero on --help
	m := regexp.MustCompile(`(?m)^\s+-(-?[a-z-]*packet[a-z-]*)\b`).FindSubmatch(out)
	if m == nil {
		return ""
	}
	return "-" + strings.TrimPrefix(string(m[1]), "-")
}

// nodeStatus is the part of `warren status --json` the benchmark reads.
type nodeStatus struct {
	Peers []peerStatus `json:"peers"`
}

// peerStatus is one peer in nodeStatus.
type peerStatus struct {
	Name string       `json:"name"`
	IPs  []netip.Addr `json:"ips"`
	Path string       `json:"path"`
}

// waitStatus polls `warren status --json` until ok accepts it (nil: any answer), for up to 20 s.
func (b *bench) waitStatus(ctx context.Context, warren, state string, ok func(nodeStatus) bool) (nodeStatus, error) {
	deadline := time.Now().Add(20 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		out, err := exec.CommandContext(ctx, warren, "status", "--json", "--state", state).Output()
		last = out
		var st nodeStatus
		if err == nil && json.Unmarshal(out, &st) == nil && (ok == nil || ok(st)) {
			return st, nil
		}
		if err := load.Sleep(ctx, 100*time.Millisecond); err != nil {
			return nodeStatus{}, err
		}
	}
	return nodeStatus{}, fmt.Errorf("node %s not ready in 20s (logs in %s): %s", state, b.dir, last)
}

// runCLI runs one warren CLI command and returns its output in the error if it fails.
func runCLI(ctx context.Context, warren string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, warren, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("warren %s: %w: %s", strings.Join(args[:2], " "), err, out)
	}
	return nil
}

// socksDialer returns a dial func that connects to dest through the SOCKS5 proxy at proxyAddr.
func socksDialer(proxyAddr string, dest netip.AddrPort) (load.DialFunc, error) {
	d, err := proxy.SOCKS5("tcp", proxyAddr, nil, &net.Dialer{})
	if err != nil {
		return nil, fmt.Errorf("socks5 dialer for %s: %w", proxyAddr, err)
	}
	cd := d.(proxy.ContextDialer)
	return func(ctx context.Context) (net.Conn, error) {
		return cd.DialContext(ctx, "tcp", dest.String())
	}, nil
}

// socksUDP returns a func that opens a SOCKS5 UDP association at proxyAddr towards dest.
func socksUDP(proxyAddr string, dest netip.AddrPort) func(context.Context) (load.UDPPath, error) {
	return func(ctx context.Context) (load.UDPPath, error) { return load.AssociateUDP(ctx, proxyAddr, dest) }
}

// waitReachable retries one echo through dial until it works or limit passes (a WireGuard
// handshake or a QUIC link may still be coming up).
func waitReachable(ctx context.Context, dial load.DialFunc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if err = echoOnce(ctx, dial); err == nil {
			return nil
		}
		if err := load.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("load server not reachable in %v: %w", limit, err)
}

func echoOnce(ctx context.Context, dial load.DialFunc) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte{load.ModeEcho, 'x'}); err != nil {
		return err
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err
}

// wgKeyPair returns a fresh Curve25519 key pair, hex encoded as wireguard-go's UAPI wants.
func wgKeyPair() (priv, pub string, err error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", "", fmt.Errorf("wireguard key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return "", "", fmt.Errorf("wireguard key: %w", err)
	}
	return hex.EncodeToString(k[:]), hex.EncodeToString(p), nil
}

// freePort asks the kernel for a free loopback port ("tcp" or "udp"). Another process could take it
// before the child binds it; on this otherwise idle loopback that does not happen in practice.
func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free udp port: %w", err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free tcp port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
