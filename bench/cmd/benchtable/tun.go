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
func (b *bench) warrenTun(ctx context.Context, self string) (target, error) {
	const name = "warren-tun"
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB := "wbench-a-"+id, "wbench-b-"+id
	vethA, vethB := "wba"+id, "wbb"+id
	addrA, addrB := "10.97.0.1", "10.97.0.2"
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
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return target{}, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	// `ip netns exec` execs the binary, so each process keeps the pid the bench measures.
	inNS := func(ns, proc, bin string, args ...string) (*proc, error) {
		return b.start(proc, "ip", nil, append([]string{"netns", "exec", ns, bin}, args...)...)
	}
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
	common := []string{"up", "--coord", coordAddr, "--coord-key", coordKey, "--log-level", "warn", "--socks", "", "--tun"}
	pa, err := inNS(nsA, name+"-a", warren, append(common, "--name", "a", "--state", stateA, "--listen", addrA+":0")...)
	if err != nil {
		return target{}, err
	}
	pb, err := inNS(nsB, name+"-b", warren, append(common, "--name", "b", "--state", stateB, "--listen", addrB+":0",
		"--expose", fmt.Sprintf("tcp:%d", tunLoadPort))...)
	if err != nil {
		return target{}, err
	}
	ipB, err := b.joinPair(ctx, warren, stateA, stateB)
	if err != nil {
		return target{}, err
	}
	lp, err := inNS(nsB, name+"-load", self, "-serve-load", netip.AddrPortFrom(ipB, tunLoadPort).String(), "-serve-load-any")
	if err != nil {
		return target{}, err
	}
	if l, err := lp.line(ctx, 10*time.Second); err != nil || !strings.HasPrefix(l, "listening ") {
		return target{}, fmt.Errorf("load server in %s said %q: %v", nsB, l, err)
	}
	dest := netip.AddrPortFrom(ipB, tunLoadPort).String()
	dial := func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		var derr error
		if err := enterNS(nsA, func() {
			var d net.Dialer
			c, derr = d.DialContext(ctx, "tcp", dest)
		}); err != nil {
			return nil, err
		}
		return c, derr
	}
	return target{dial: load.DialFunc(dial), vpn: []*proc{pa, pb}}, nil
}

// enterNS runs f on an OS thread switched into network namespace ns (as `ip netns add` made it):
// sockets f creates stay in ns for their whole life, whatever thread uses them later.
func enterNS(ns string, f func()) error {
	target, err := os.Open("/var/run/netns/" + ns)
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
