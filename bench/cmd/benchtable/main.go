// Command benchtable is `make bench`: it measures, in one run on loopback, plain TCP (the ceiling),
// two wireguard-go+gVisor peers behind a SOCKS5 front (the comparison), and the real warren binaries
// (coord + two nodes, SOCKS5 → QUIC → localhost), and prints one table with the median of several
// runs per row, plus warren's ratios to the other two. Each wireguard-go row is measured at
// GOMAXPROCS=1 and at Go's default and the better figure per column counts; as root it adds TUN mode
// and wireguard-go on kernel TUN devices in network namespaces; every row with a UDP path also gets
// 64-byte UDP round trips (at 60 packets/s and back to back).
//
// Every row reaches the same kind of load server (package load) in a process of its own; the
// driver is the client. Child processes run in their own process groups and are stopped, and the
// temp dir removed, however the run ends.
//
//	go run ./cmd/benchtable -bin ../bin -wgpeer ../bin/bench/wgpeer
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/warren-net/warren/bench/internal/load"
)

// options are the command-line knobs; every duration and count is bounded by them.
type options struct {
	bin        string        // directory with warren and warren-coord
	wgpeer     string        // the wgpeer binary
	rows       []string      // rows to measure, in order
	runs       int           // runs per row (the median is shown)
	dur        time.Duration // measured window of each bulk run
	warmup     time.Duration // unmeasured start of each bulk run
	upload     bool          // bulk runs client → server instead of server → client
	uploadCol  bool          // also a 1-stream upload per run (the table's upload column)
	rttN       int           // round trips per RTT measurement
	conns      int           // connections per new-connection measurement
	connLimit  time.Duration // time bound of the new-connection measurement
	wgMTU      int           // MTU of the wireguard-go tunnel
	verbose    bool          // print every run's numbers
	keep       bool          // keep the temp dir (logs) after the run
	profile    string        // directory for perf profiles of the VPN rows; "" = none
	profileN   int           // streams of the profiled bulk run
	base       string        // directory with baseline warren binaries for the warren-base row; "" = none
	lowLatency bool          // also measure warren with --low-latency and the peer with its runtime setting
	appsAwake  bool          // the driver and the load server run with godebugAwake
	idle       int           // idle SOCKS connections held open at once; 0 = skip
	idleRows   []string      // rows the idle check runs on
	idlePar    int           // connections opened in parallel for the idle check
	udpN60     int           // UDP round trips at 60 packets/s per run (0 = skip)
	udpNFast   int           // UDP round trips back to back per run (0 = skip)
	udpLoss    time.Duration // a UDP datagram not back in this time is lost
	idleNodes  int           // nodes in the idle-cost network (0 = skip)
	idleSettle time.Duration // wait after all links are direct before the idle window
	idleWindow time.Duration // the idle-cost measuring window
	idleScale  int           // simulated nodes for the coord's idle cost at scale (0 = skip)
}

// allRows are the rows benchtable knows, in table order. warren-base is added by -base.
var allRows = []string{"direct", "peer+socks", "peer-fwd", "warren", "warren-packet", "peer-tun", "warren-tun", "warren-run", "warren-base", "warren-relay"}

// defaultRows are the rows measured without -rows: all but peer-fwd (the peer's path with its load
// server as a process of its own, for a like-for-like look at round trips), warren-base (-base)
// and warren-relay (the relay's rate bound).
var defaultRows = []string{"direct", "peer+socks", "warren", "warren-packet", "peer-tun", "warren-tun", "warren-run"}

func main() {
	var o options
	var rows string
	serveLoad := flag.String("serve-load", "", "internal: run only the load server on this `address`")
	serveLoadAny := flag.Bool("serve-load-any", false, "internal: let -serve-load listen on a non-loopback address (the warren-tun row's namespace)")
	flag.StringVar(&o.bin, "bin", "bin", "`dir`ectory holding the warren and warren-coord binaries")
	flag.StringVar(&o.wgpeer, "wgpeer", "bin/bench/wgpeer", "the wgpeer `binary` (go build ./cmd/wgpeer)")
	flag.StringVar(&rows, "rows", strings.Join(defaultRows, ","), "comma-separated `rows` to measure")
	flag.IntVar(&o.runs, "runs", 3, "runs per row; the table shows the median")
	flag.DurationVar(&o.dur, "dur", 2*time.Second, "measured time of each bulk throughput run")
	flag.BoolVar(&o.uploadCol, "upload-col", true, "also measure a 1-stream upload (client to server) per row and run: the table's upload column")
	flag.BoolVar(&o.upload, "upload", false, "bulk runs send from the client to the server (an upload through the path) instead of the other way")
	flag.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "unmeasured start of each bulk run")
	flag.IntVar(&o.rttN, "rtt-n", 2000, "64-byte round trips per RTT measurement")
	flag.IntVar(&o.conns, "conns", 300, "connections per new-connections-per-second measurement")
	flag.DurationVar(&o.connLimit, "conn-limit", 3*time.Second, "time bound of the new-connections measurement")
	flag.IntVar(&o.wgMTU, "wg-mtu", 1420, "MTU of the wireguard-go tunnel (wireguard-go's default)")
	var idleRows string
	// 10,000: issue 17's figure; a warren node takes 16384 streams from one peer (peer.maxStreams).
	flag.IntVar(&o.idle, "idle", 10000, "idle SOCKS connections to hold open at once through each of -idle-rows after the runs (0 = skip;\n"+
		"a warren node takes at most 16384 streams from one peer; opening stops after -idle-par failures)")
	flag.StringVar(&idleRows, "idle-rows", "peer+socks,warren,warren-base", "comma-separated `rows` the -idle check runs on")
	flag.IntVar(&o.idlePar, "idle-par", 64, "connections opened in parallel for the -idle check")
	flag.IntVar(&o.udpN60, "udp-n60", 300, "64-byte UDP round trips at 60 packets/s per run (5 s at 300; 0 = skip)")
	flag.IntVar(&o.udpNFast, "udp-n", 2000, "64-byte UDP round trips back to back per run (0 = skip)")
	flag.DurationVar(&o.udpLoss, "udp-loss", 500*time.Millisecond, "a UDP datagram not echoed within this time counts as lost")
	flag.IntVar(&o.idleNodes, "idle-nodes", 10, "after the table, measure the idle cost of a network of this many idle nodes (0 = skip)")
	flag.DurationVar(&o.idleSettle, "idle-settle", 15*time.Second, "wait after every idle node's links are direct before the idle window")
	flag.DurationVar(&o.idleWindow, "idle-window", 66*time.Second, "the idle-cost measuring window (a node with one coord sends a keep-alive every 22 s: three of them)")
	flag.IntVar(&o.idleScale, "idle-scale", 1000, "also measure the coord's idle cost per node with this many simulated idle nodes (0 = skip)")
	flag.BoolVar(&o.lowLatency, "low-latency", true, "also measure warren's rows with `warren up --low-latency` and the peer's with the same Go runtime setting ("+godebugAwake+"); each row's table line is then the best of its variants per column. Turn it off to compare a build with -base")
	appsAwake := flag.Bool("apps-awake", true, "run the driver (the client) and the load server with the same runtime setting ("+godebugAwake+"): they stand for the apps a VPN carries (ssh, a game), which have no Go runtime monitor to wake; without it their own wake-ups weigh on every row's round trips, twice on rows whose load server is a process of its own")
	flag.BoolVar(&o.verbose, "v", false, "print every run's numbers")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir with the child processes' logs")
	flag.StringVar(&o.profile, "profile", "", "after the table, profile each VPN row's processes with perf into this `dir`ectory")
	flag.IntVar(&o.profileN, "profile-streams", 1, "parallel streams of the bulk run that -profile records")
	flag.StringVar(&o.base, "base", "", "also measure row warren-base: the warren row with the binaries in this `dir`ectory (a build\n"+
		"before a change), in turns with the other rows, so that a change is compared within one run")
	flag.Parse()

	if *serveLoad != "" {
		if err := runLoadServer(*serveLoad, *serveLoadAny); err != nil {
			fmt.Fprintln(os.Stderr, "load server:", err)
			os.Exit(1)
		}
		return
	}
	if *appsAwake {
		if err := awakeSelf(); err != nil {
			fmt.Fprintln(os.Stderr, "benchtable:", err)
			os.Exit(1)
		}
	}
	o.appsAwake = *appsAwake
	o.rows = strings.Split(rows, ",")
	o.idleRows = strings.Split(idleRows, ",")
	if o.base != "" && !slices.Contains(o.rows, "warren-base") {
		o.rows = append(o.rows, "warren-base")
	}
	for _, r := range o.rows {
		if !slices.Contains(allRows, r) {
			fmt.Fprintf(os.Stderr, "benchtable: unknown row %q (known: %s)\n", r, strings.Join(allRows, ", "))
			os.Exit(2)
		}
	}
	if slices.Contains(o.rows, "warren-base") && o.base == "" {
		fmt.Fprintln(os.Stderr, "benchtable: row warren-base needs -base")
		os.Exit(2)
	}
	if o.runs < 1 || o.rttN < 1 || o.conns < 1 || o.dur <= 0 || o.idle < 0 || o.idlePar < 1 || o.profileN < 1 || o.udpN60 < 0 || o.udpNFast < 0 || o.udpLoss <= 0 ||
		o.idleNodes < 0 || o.idleNodes == 1 || o.idleScale < 0 || o.idleSettle < 0 || o.idleWindow <= 0 {
		fmt.Fprintln(os.Stderr, "benchtable: -runs, -rtt-n, -conns, -dur, -idle-par, -profile-streams, -udp-loss and -idle-window must be positive,\n"+
			"-idle, -udp-n60, -udp-n and -idle-settle not negative, -idle-nodes 0 or at least 2")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		stop()
		os.Exit(1)
	}
}

// runLoadServer is the -serve-load mode: the load server in a process of its own, stopped by
// SIGINT or SIGTERM. It prints "listening ADDR" once it accepts connections. Only with anyAddr
// may addr be other than a loopback address (inside the benchmark's own network namespace).
func runLoadServer(addr string, anyAddr bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if !anyAddr && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("%s: loopback addresses only", addr)
	}
	// The UDP echo listens on the same port number (the rows' UDP round trips).
	uc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return fmt.Errorf("udp echo: %w", err)
	}
	go load.ServeUDP(uc)
	defer uc.Close()
	fmt.Println("listening", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	return load.Serve(ln)
}

func run(ctx context.Context, o options) (err error) {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	for _, f := range []string{filepath.Join(o.bin, "warren"), filepath.Join(o.bin, "warren-coord"), o.wgpeer} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w (run 'make build' and build ./cmd/wgpeer first, or use 'make bench')", err)
		}
	}
	dir, err := os.MkdirTemp("", "warren-bench")
	if err != nil {
		return err
	}
	b := &bench{opts: o, dir: dir, self: self}
	defer func() {
		b.stopAll()
		if o.keep || (err != nil && ctx.Err() == nil) { // keep the logs of a failure, not of Ctrl-C
			fmt.Fprintf(os.Stderr, "logs kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	started, load0, meter := time.Now(), loadAvg(), newCPUMeter(b)
	// Set every row up first and measure them in turns (run 1 of each row, then run 2, ...), so
	// that other load on the machine, if any, spreads over the rows instead of hitting one.
	var loadAddr netip.AddrPort
	if slices.ContainsFunc(o.rows, func(r string) bool { return r != "peer+socks" && r != "warren-tun" && r != "peer-tun" }) {
		if loadAddr, err = b.startLoad(ctx, self); err != nil {
			return err
		}
	}
	var rows []*rowState
	var notes []string
	for _, row := range o.rows {
		for _, v := range variants(row, o.lowLatency) {
			t, note, err := b.setUp(ctx, row, v, loadAddr)
			if err != nil {
				return fmt.Errorf("row %s: set up: %w", v.name, err)
			}
			if note != "" {
				notes = append(notes, note)
				continue
			}
			if err := waitReachable(ctx, t.dial, 20*time.Second); err != nil {
				return fmt.Errorf("row %s: %w", v.name, err)
			}
			rss, err := maxRSS(t.vpn)
			if err != nil {
				return fmt.Errorf("row %s: %w", v.name, err)
			}
			rows = append(rows, &rowState{name: v.name, row: row, v: v, t: t, rssIdle: rss})
		}
	}
	for i := range o.runs {
		for _, r := range rows {
			fmt.Fprintf(os.Stderr, "run %d/%d: %s\n", i+1, o.runs, r.name)
			res, err := b.measureOnce(ctx, r.t)
			if err != nil {
				return fmt.Errorf("row %s: run %d: %w", r.name, i+1, err)
			}
			if o.verbose {
				fmt.Fprintf(os.Stderr, "  %s\n", res)
			}
			r.runs = append(r.runs, res)
		}
	}
	var results, vs []rowResult // vs: the variants of the current row
	for i, r := range rows {
		m := median(r.runs)
		m.rssIdle = r.rssIdle
		res := rowResult{name: r.name, socks: r.t.socks, vpn: len(r.t.vpn) > 0, median: m}
		// The idle check runs on one variant of a row: as shipped (Go's default GOMAXPROCS, no
		// low-latency setting).
		if o.idle > 0 && r.t.socks && slices.Contains(o.idleRows, r.row) && r.v.gomaxprocs == "" && !r.v.lowLatency {
			fmt.Fprintf(os.Stderr, "idle: %s, %d connections\n", r.name, o.idle)
			ir, err := b.idleCheck(ctx, r.t)
			if err != nil {
				return fmt.Errorf("row %s: idle connections: %w", r.name, err)
			}
			res.idle = &ir
		}
		results = append(results, res)
		if r.name != r.row {
			vs = append(vs, res)
		}
		// After the last variant of a row measured in several configurations: the best of them.
		if len(vs) > 0 && (i+1 == len(rows) || rows[i+1].row != r.row) {
			results = append(results, bestOf(r.row, vs))
			vs = nil
		}
	}
	took := time.Since(started)
	printTable(os.Stdout, o, results, notes, took, load0, meter.describe(b, took.Seconds()))
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
		for _, r := range rows {
			if len(r.t.vpn) == 0 {
				continue
			}
			fmt.Fprintf(os.Stderr, "profiling %s\n", r.name)
			txt, err := b.profile(ctx, o.profile, r.name, r.t)
			if err != nil {
				return err
			}
			fmt.Printf("profile of %s (%d streams): %s\n", r.name, o.profileN, txt)
		}
	}
	if o.idleNodes == 0 {
		return nil
	}
	b.stopAll() // the rows' processes would add their own keep-alives to the machine's noise
	fmt.Fprintf(os.Stderr, "idle cost: %d nodes, %s settle, %s window\n", o.idleNodes, o.idleSettle, o.idleWindow)
	up, down, err := b.measureIdleCost(ctx)
	if err != nil {
		return fmt.Errorf("idle cost: %w", err)
	}
	var atScale float64
	if o.idleScale > 0 {
		fmt.Fprintf(os.Stderr, "idle cost: the coord with %d simulated nodes\n", o.idleScale)
		if atScale, err = b.measureCoordAtScale(ctx); err != nil {
			return fmt.Errorf("idle cost at scale: %w", err)
		}
	}
	printIdleCost(os.Stdout, up, down, o.idleLinkAfter(), o.idleScale, atScale)
	return nil
}

// rowState is a row being measured: its path and its runs so far.
type rowState struct {
	name    string // the row, or one variant of it (peer+socks@1)
	row     string // the row as -rows names it
	v       variant
	t       target
	rssIdle float64 // largest VPN process resident set right after setup, MiB
	runs    []runResult
}

// variant is one configuration a row is measured in.
type variant struct {
	name       string
	gomaxprocs string // "": Go's default
	// lowLatency: warren up --low-latency; for the wireguard-go peer, the same Go runtime setting
	// in its environment (godebugAwake).
	lowLatency bool
}

// godebugAwake is the runtime setting behind warren's --low-latency (cmd/warren/lowlatency.go): the
// runtime's monitor thread never sleeps deeply, so no system call has to wake it. The peer is a Go
// program too, and gets it in its low-latency variants.
const godebugAwake = "GODEBUG=schedtrace=2147483647"

// variants are the configurations row is measured in, so that the table compares each side at its
// best: the wireguard-go peer at GOMAXPROCS=1 (what warren's node uses on this machine's 2 cores)
// and at Go's default, each with and without the low-latency runtime setting (lowLatency);
// warren's rows as they ship and with --low-latency. Every other row once, as it ships.
func variants(row string, lowLatency bool) []variant {
	switch row {
	case "peer+socks", "peer-tun", "peer-fwd":
		procs, lls := []string{""}, []bool{false}
		if runtime.GOMAXPROCS(0) > 1 {
			procs = []string{"1", ""}
		}
		if lowLatency {
			lls = append(lls, true)
		}
		if len(procs)*len(lls) == 1 {
			break
		}
		var vs []variant
		for _, ll := range lls {
			for _, p := range procs {
				name := row + "@" + p
				if p == "" {
					name = fmt.Sprintf("%s@%d", row, runtime.GOMAXPROCS(0))
				}
				if ll {
					name += ",ll"
				}
				vs = append(vs, variant{name: name, gomaxprocs: p, lowLatency: ll})
			}
		}
		return vs
	case "warren", "warren-packet", "warren-tun", "warren-run":
		if lowLatency {
			return []variant{{name: row + "@default"}, {name: row + "@ll", lowLatency: true}}
		}
	}
	return []variant{{name: row}}
}

// warrenFlags are the extra `warren up` flags of a variant of a warren row.
func (v variant) warrenFlags() []string {
	if v.lowLatency {
		return []string{"--low-latency"}
	}
	return nil
}

// peerEnv is the environment of a variant's wgpeer processes (besides their keys).
func (v variant) peerEnv() []string {
	env := []string{"GOMAXPROCS=" + v.gomaxprocs}
	if v.lowLatency {
		env = append(env, godebugAwake)
	}
	return env
}

// setUp starts the processes of one row in one variant. A row that this build cannot measure
// returns a note instead.
func (b *bench) setUp(ctx context.Context, name string, v variant, loadAddr netip.AddrPort) (target, string, error) {
	switch name {
	case "direct":
		return b.direct(ctx, loadAddr), "", nil
	case "peer+socks":
		t, err := b.peer(ctx, v, netip.AddrPort{})
		return t, "", err
	case "peer-fwd":
		t, err := b.peer(ctx, v, loadAddr)
		return t, "", err
	case "warren":
		t, err := b.warren(ctx, b.opts.bin, loadAddr, v.name, v.warrenFlags()...)
		return t, "", err
	case "warren-base":
		t, err := b.warren(ctx, b.opts.base, loadAddr, name)
		return t, "", err
	case "warren-relay":
		t, err := b.warren(ctx, b.opts.bin, loadAddr, name, "--no-direct")
		return t, "", err
	case "warren-packet":
		flagName := packetPathFlag(ctx, filepath.Join(b.opts.bin, "warren"))
		if flagName == "" {
			return target{}, "warren-packet: skipped, `warren up` has no flag for node.Config.PacketPathTCP", nil
		}
		t, err := b.warren(ctx, b.opts.bin, loadAddr, v.name, append(v.warrenFlags(), flagName)...)
		return t, "", err
	case "peer-tun":
		if why := tunSkip(); why != "" {
			return target{}, v.name + ": skipped, " + why, nil
		}
		t, err := b.peerTun(ctx, b.self, v)
		return t, "", err
	case "warren-tun":
		if why := tunSkip(); why != "" {
			return target{}, "warren-tun: skipped, " + why, nil
		}
		t, err := b.warrenTun(ctx, b.self, v)
		return t, "", err
	case "warren-run":
		if why := runSkip(); why != "" {
			return target{}, "warren-run: skipped, " + why, nil
		}
		t, err := b.warrenRun(ctx, v, loadAddr)
		return t, "", err
	}
	return target{}, "", errors.New("unknown row")
}

// measureOnce runs every measurement of one row once.
func (b *bench) measureOnce(ctx context.Context, t target) (runResult, error) {
	var r runResult
	var cpu float64
	var bytes int64
	var sampleErr error
	for _, streams := range []int{1, 4} {
		var cpu0 float64
		var loaded chan error
		window := func(phase string) {
			switch phase {
			case "start":
				if streams == 1 {
					// Round trips beside the bulk stream, on a connection of their own: what an
					// interactive flow (ssh, a game) sees while a transfer fills the path.
					loaded = make(chan error, 1)
					go func() {
						rtts, err := load.RTTFor(ctx, t.dial, 64, b.opts.dur*3/4, 100000)
						r.loadedP50, r.loadedP99 = load.Percentile(rtts, 50), load.Percentile(rtts, 99)
						loaded <- err
					}()
				}
				var err error
				cpu0, err = sumCPU(t.vpn)
				sampleErr = errors.Join(sampleErr, err)
			case "mid":
				rss, err := maxRSS(t.vpn)
				r.rssLoad = max(r.rssLoad, rss)
				sampleErr = errors.Join(sampleErr, err)
			case "end":
				cpu1, err := sumCPU(t.vpn)
				cpu += cpu1 - cpu0
				sampleErr = errors.Join(sampleErr, err)
			}
		}
		res, err := load.Bulk(ctx, t.dial, streams, b.opts.upload, b.opts.warmup, b.opts.dur, window)
		if loaded != nil {
			if lerr := <-loaded; lerr != nil && err == nil {
				err = fmt.Errorf("round trips under load: %w", lerr)
			}
		}
		if err != nil {
			return r, err
		}
		if sampleErr != nil {
			return r, sampleErr
		}
		bytes += res.Bytes
		if streams == 1 {
			r.gbps1 = res.Gbps()
		} else {
			r.gbps4 = res.Gbps()
		}
	}
	if len(t.vpn) > 0 && bytes > 0 {
		r.cpuPerGB = cpu / (float64(bytes) / 1e9)
	}
	if b.opts.uploadCol && !b.opts.upload {
		res, err := load.Bulk(ctx, t.dial, 1, true, b.opts.warmup, b.opts.dur, nil)
		if err != nil {
			return r, fmt.Errorf("upload: %w", err)
		}
		r.up1 = res.Gbps()
	}
	rtts, err := load.RTT(ctx, t.dial, b.opts.rttN, 64, 30*time.Second)
	if err != nil {
		return r, err
	}
	r.p50, r.p99 = load.Percentile(rtts, 50), load.Percentile(rtts, 99)
	if t.udp != nil && (b.opts.udpN60 > 0 || b.opts.udpNFast > 0) {
		if r.udp60, r.udpFast, err = b.measureUDP(ctx, t); err != nil {
			return r, fmt.Errorf("udp: %w", err)
		}
	}
	if t.socks {
		if r.connsPerSec, err = load.ConnRate(ctx, t.dial, b.opts.conns, b.opts.connLimit); err != nil {
			return r, fmt.Errorf("new connections: %w", err)
		}
	}
	return r, nil
}

// measureUDP opens one UDP path (a new SOCKS5 association) and measures 64-byte round trips at 60
// packets/s, a game's rate, and back to back, after 20 unmeasured ones.
func (b *bench) measureUDP(ctx context.Context, t target) (slow, fast udpStats, err error) {
	p, err := t.udp(ctx)
	if err != nil {
		return slow, fast, err
	}
	defer p.Close()
	if _, err := load.UDPRTT(ctx, p, 20, 64, 0, b.opts.udpLoss); err != nil {
		return slow, fast, err
	}
	if n := b.opts.udpN60; n > 0 {
		res, err := load.UDPRTT(ctx, p, n, 64, time.Second/60, b.opts.udpLoss)
		if err != nil {
			return slow, fast, err
		}
		slow = newUDPStats(res, n)
	}
	if n := b.opts.udpNFast; n > 0 {
		cpu0, err := sumCPU(t.vpn)
		if err != nil {
			return slow, fast, err
		}
		res, err := load.UDPRTT(ctx, p, n, 64, 0, b.opts.udpLoss)
		if err != nil {
			return slow, fast, err
		}
		cpu1, err := sumCPU(t.vpn)
		if err != nil {
			return slow, fast, err
		}
		fast = newUDPStats(res, n)
		fast.cpuPerRT = time.Duration((cpu1 - cpu0) / float64(n) * 1e9)
	}
	return slow, fast, nil
}

// idleCheck holds opts.idle SOCKS connections open at once through t and samples the VPN
// processes' resident sets while they are all open.
func (b *bench) idleCheck(ctx context.Context, t target) (idleResult, error) {
	var ir idleResult
	var sampleErr error
	ir.rss0, sampleErr = rssEach(t.vpn)
	ir.res = load.Idle(ctx, t.dial, b.opts.idle, b.opts.idlePar, func() {
		// Held connections are idle ones: let the last handshakes settle, quiet relays give up their
		// goroutines (warren: after 1 s) and the processes return what the burst left (warren: 2 s
		// after its last collection), for the peer alike.
		load.Sleep(ctx, 5*time.Second)
		var err error
		ir.rss, err = rssEach(t.vpn)
		sampleErr = errors.Join(sampleErr, err)
	})
	return ir, errors.Join(sampleErr, ctx.Err())
}

// rssEach is the resident set of each of ps, in MiB.
func rssEach(ps []*proc) ([]float64, error) {
	out := make([]float64, len(ps))
	for i, p := range ps {
		r, err := rssMiB(p.pid())
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// sumCPU is the CPU time used so far by all of ps, in seconds.
func sumCPU(ps []*proc) (float64, error) {
	var sum float64
	for _, p := range ps {
		s, err := cpuSeconds(p.pid())
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// maxRSS is the largest resident set of ps, in MiB.
func maxRSS(ps []*proc) (float64, error) {
	var m float64
	for _, p := range ps {
		r, err := rssMiB(p.pid())
		if err != nil {
			return 0, err
		}
		m = max(m, r)
	}
	return m, nil
}

// loadAvg is the 1-minute load average from /proc/loadavg, to show how busy the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
