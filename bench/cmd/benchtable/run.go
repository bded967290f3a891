package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runSkip says why the warren-run row cannot run here, or "" if it can. `warren run` itself needs
// no root; the driver does, to make its sockets in the command's network namespace (which a user
// namespace owns: only root can enter it from a multithreaded program).
func runSkip() string {
	if os.Geteuid() != 0 {
		return "needs root (the client's sockets are made in warren run's namespace)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return "user namespaces are disabled (user.max_user_namespaces is 0)"
	}
	return ""
}

// warrenRun is `warren run` end to end: the warren row's coord and nodes on loopback (node A
// without SOCKS5), and `warren run --state A -- sleep` holding a namespace whose TUN device node A
// bridges to the overlay. The client's sockets are made in that namespace, so every byte goes
// kernel TCP (or UDP) in the namespace → its TUN device → node A's device stack (TCP ends there and
// rides a QUIC stream; UDP rides the packet path) → node B → the load server on loopback, exposed by
// B. Node A and B are the VPN processes measured; `warren run` only waits for its command.
func (b *bench) warrenRun(ctx context.Context, v variant, loadAddr netip.AddrPort) (target, error) {
	pair, err := b.warrenPair(ctx, b.opts.bin, loadAddr, v.name, "", v.warrenFlags()...)
	if err != nil {
		return target{}, err
	}
	// The command says its pid (no pid namespace: the host's) once it runs, that is once node A
	// has the device; exec keeps the pid.
	run, err := b.start(v.name+"-run", filepath.Join(b.opts.bin, "warren"), nil,
		"run", "--state", pair.stateA, "--", "sh", "-c", "echo ready $$; exec sleep 2147483647")
	if err != nil {
		return target{}, err
	}
	l, err := run.line(ctx, 20*time.Second)
	pid, perr := strconv.Atoi(strings.TrimPrefix(l, "ready "))
	if err != nil || !strings.HasPrefix(l, "ready ") || perr != nil {
		return target{}, fmt.Errorf("warren run said %q: %v", l, err)
	}
	t := nsClient(fmt.Sprintf("/proc/%d/ns/net", pid), pair.dest)
	t.vpn = pair.vpn
	return t, nil
}
