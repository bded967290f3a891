package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/bench/internal/load"
)

// tunLoadPort is the load server's port in the warren-tun row (iperf3's; the namespace is private).
const tunLoadPort = 5201

// tunSkip says why the warren-tun row cannot run here, or "" if it can.
func tunSkip() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces and TUN devices)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs ip(8) (iproute2)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	return ""
}

// warrenTun is TUN mode end to end: two network namespaces of its own joined by a veth pair, the
// coord and node A in one, node B in the other, both `warren up --tun`; the load server listens on
// node B's overlay IPv4 inside B's namespace (node B exposes its port), and the client dials it from
// A's namespace, so every byte goes kernel TCP → warren0 → node A → QUIC DATAGRAMs → node B →
// warren0 → kernel TCP. The namespaces go when the run ends (b.cleanup), however it ends.
func (b *bench) warrenTun(ctx context.Context, self string, v variant) (target, error) {
	name := v.name
	nsA, nsB, addrA, addrB, err := b.nsPair(ctx, "w")
	if err != nil {
		return target{}, err
	}
	inNS := func(ns, proc, bin string, args ...string) (*proc, error) { return b.inNS(ns, proc, bin, nil, args...) }
	warren := filepath.Join(b.opts.bin, "warren")
	dir := filepath.Join(b.dir, name)
	coord, err := inNS(nsA, name+"-coord", filepath.Join(b.opts.bin, "warren-coord"),
		"--listen", addrA+":0", "--data", filepath.Join(dir, "coord"), "--log-level", "warn")
	if err != nil {
		return target{}, err
	}
	coordAddr, coordKey, err := coordHello(ctx, coord)
	if err != nil {
		return target{}, err
	}
	stateA, stateB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	common := append([]string{"up", "--coord", coordAddr, "--coord-key", coordKey, "--log-level", "warn", "--socks", "", "--tun", "--link-idle", "0"}, v.warrenFlags()...)
	pa, err := inNS(nsA, name+"-a", warren, append(common, "--name", "a", "--state", stateA, "--listen", addrA+":0")...)
	if err != nil {
		return target{}, err
	}
	pb, err := inNS(nsB, name+"-b", warren, append(common, "--name", "b", "--state", stateB, "--listen", addrB+":0",
		"--expose", fmt.Sprintf("tcp:%d,udp:%d", tunLoadPort, tunLoadPort))...)
	if err != nil {
		return target{}, err
	}
	ipB, err := b.joinPair(ctx, warren, stateA, stateB, "direct")
	if err != nil {
		return target{}, err
	}
	return b.nsTarget(ctx, self, name, nsA, nsB, netip.AddrPortFrom(ipB, tunLoadPort), []*proc{pa, pb})
}

// nsPair makes two network namespaces of this run joined by a veth pair (tag tells the pairs of
// one run apart) and returns their names and veth addresses. They are deleted when the run ends
// (b.cleanups), however it ends.
func (b *bench) nsPair(ctx context.Context, tag string) (nsA, nsB, addrA, addrB string, err error) {
	b.nsPairs++
	id := fmt.Sprintf("%d%s%d", os.Getpid()%100000, tag, b.nsPairs)
	nsA, nsB = "wbench-a-"+id, "wbench-b-"+id
	vethA, vethB := "wba"+id, "wbb"+id
	addrA, addrB = fmt.Sprintf("10.97.%d.1", b.nsPairs), fmt.Sprintf("10.97.%d.2", b.nsPairs)
	b.cleanups = append(b.cleanups, func() {
		exec.Command("ip", "netns", "del", nsA).Run()
		exec.Command("ip", "netns", "del", nsB).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", nsA}, {"netns", "add", nsB},
		{"link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB},
		{"-n", nsA, "addr", "add", addrA + "/24", "dev", vethA}, {"-n", nsB, "addr", "add", addrB + "/24", "dev", vethB},
		{"-n", nsA, "link", "set", vethA, "up"}, {"-n", nsB, "link", "set", vethB, "up"},
		{"-n", nsA, "link", "set", "lo", "up"}, {"-n", nsB, "link", "set", "lo", "up"},
	} {
		if err := runIP(ctx, args...); err != nil {
			return "", "", "", "", err
		}
	}
	return nsA, nsB, addrA, addrB, nil
}

func runIP(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// inNS starts bin in network namespace ns. `ip netns exec` execs the binary, so the process keeps
// the pid the bench measures.
func (b *bench) inNS(ns, name, bin string, env []string, args ...string) (*proc, error) {
	return b.start(name, "ip", env, append([]string{"netns", "exec", ns, bin}, args...)...)
}

// nsTarget starts the load server (TCP and UDP) on dest inside nsB and returns the target that
// reaches it from sockets made in nsA.
func (b *bench) nsTarget(ctx context.Context, self, name, nsA, nsB string, dest netip.AddrPort, vpn []*proc) (target, error) {
	lp, err := b.inNS(nsB, name+"-load", self, b.appEnv(), "-serve-load", dest.String(), "-serve-load-any")
	if err != nil {
		return target{}, err
	}
	if l, err := lp.line(ctx, 10*time.Second); err != nil || !strings.HasPrefix(l, "listening ") {
		return target{}, fmt.Errorf("load server in %s said %q: %v", nsB, l, err)
	}
	t := nsClient(nsA, dest)
	t.vpn = vpn
	return t, nil
}

// nsClient is the target that reaches dest (TCP and UDP) from sockets made in network namespace ns
// (a name `ip netns add` made, or a path such as /proc/PID/ns/net).
func nsClient(ns string, dest netip.AddrPort) target {
	dial := func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		var derr error
		if err := enterNS(ns, func() {
			var d net.Dialer
			c, derr = d.DialContext(ctx, "tcp", dest.String())
		}); err != nil {
			return nil, err
		}
		return c, derr
	}
	udp := func(context.Context) (load.UDPPath, error) {
		var p load.UDPPath
		var derr error
		if err := enterNS(ns, func() { p, derr = load.DialUDP(dest) }); err != nil {
			return nil, err
		}
		return p, derr
	}
	return target{dial: load.DialFunc(dial), udp: udp}
}

// peerTun is the peer for TUN mode: two wgpeer processes on wireguard-go's own kernel TUN devices
// (with its offloads), one per namespace, their UDP over the veth; the load server listens on B's
// tunnel address in B's namespace and the client dials from A's. v as in peer.
func (b *bench) peerTun(ctx context.Context, self string, v variant) (target, error) {
	name := v.name
	nsA, nsB, addrA, addrB, err := b.nsPair(ctx, "p")
	if err != nil {
		return target{}, err
	}
	privA, pubA, err := wgKeyPair()
	if err != nil {
		return target{}, err
	}
	privB, pubB, err := wgKeyPair()
	if err != nil {
		return target{}, err
	}
	const wgPort, dev = 51820, "wgbench"
	mtu := strconv.Itoa(b.opts.wgMTU)
	var procs []*proc
	for _, side := range []struct {
		ns, priv, peerKey, addr, peerAddr, endpoint string
	}{
		{nsA, privA, pubB, wgAddrA.String(), wgAddrB.String(), addrB},
		{nsB, privB, pubA, wgAddrB.String(), wgAddrA.String(), addrA},
	} {
		p, err := b.inNS(side.ns, fmt.Sprintf("%s-%c", name, 'a'+len(procs)), b.opts.wgpeer,
			append([]string{"WGPEER_PRIVATE_KEY=" + side.priv}, v.peerEnv()...),
			"--tun", dev, "--addr", side.addr, "--peer-addr", side.peerAddr, "--peer-key", side.peerKey,
			"--listen-port", strconv.Itoa(wgPort), "--endpoint", fmt.Sprintf("%s:%d", side.endpoint, wgPort), "--mtu", mtu)
		if err != nil {
			return target{}, err
		}
		if l, err := p.line(ctx, 10*time.Second); err != nil || l != "ready" {
			return target{}, fmt.Errorf("%s not ready (said %q): %v", p.name, l, err)
		}
		for _, args := range [][]string{
			{"-n", side.ns, "addr", "add", side.addr + "/24", "dev", dev},
			{"-n", side.ns, "link", "set", dev, "up"},
		} {
			if err := runIP(ctx, args...); err != nil {
				return target{}, err
			}
		}
		procs = append(procs, p)
	}
	return b.nsTarget(ctx, self, name, nsA, nsB, netip.AddrPortFrom(wgAddrB, tunLoadPort), procs)
}

// enterNS runs f on an OS thread switched into network namespace ns (a name `ip netns add` made,
// or a path): sockets f creates stay in ns for their whole life, whatever thread uses them later.
func enterNS(ns string, f func()) error {
	path := ns
	if !strings.HasPrefix(ns, "/") {
		path = "/var/run/netns/" + ns
	}
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer home.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return // the thread stays locked, so the runtime discards it
		}
		f()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}
