package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-net/warren/bench/internal/load"
)

// Idle cost targets (issue 17): what a node that carries no traffic may cost, whatever the size of
// its network, and what the coord may spend to keep one idle node connected.
const (
	idleWakeupsTarget = 5.0  // thread wake-ups per second per node
	idleCPUTarget     = 0.1  // % of one CPU per node
	idleCoordTarget   = 20.0 // µs of coord CPU per node per second
)

// idleCost is the idle row: a network of idle nodes, each with a direct link to every other.
type idleCost struct {
	nodes         int
	window        time.Duration
	wakeups, cpus []float64 // per node: thread wake-ups/s and % of one CPU
	coordCPU      float64   // µs of coord CPU per node per second
	coordWakeups  float64   // coord thread wake-ups/s
}

// idleLinkAfter is the nodes' --link-idle in the idle row, after the links-up window: long enough
// that no link winds down before that window ends, short enough to keep the bench short.
func (o *options) idleLinkAfter() time.Duration { return o.idleSettle + o.idleWindow + 10*time.Second }

// measureIdleCost starts one coord and opts.idleNodes nodes on loopback in one network, waits until
// every node has a direct link to every other, lets the start-up probing settle, then counts each
// process's thread wake-ups (context switches of all its threads) and CPU time over opts.idleWindow:
// the links-up figure. The nodes run with --link-idle idleLinkAfter; once every link has wound down
// it measures the same again (after a third of the settling time): the wound-down figure, the state
// an idle node is in after --link-idle (2 minutes by default).
func (b *bench) measureIdleCost(ctx context.Context) (up, down idleCost, err error) {
	n := b.opts.idleNodes
	warren := filepath.Join(b.opts.bin, "warren")
	dir := filepath.Join(b.dir, "idle")
	coord, coordAddr, coordKey, err := b.startCoord(ctx, "idle", b.opts.bin, dir)
	if err != nil {
		return up, down, err
	}
	nodes := make([]*proc, n)
	states := make([]string, n)
	for i := range n {
		states[i] = filepath.Join(dir, fmt.Sprintf("n%d", i))
		nodes[i], err = b.start(fmt.Sprintf("idle-n%d", i), warren, nil, "up", "--coord", coordAddr, "--coord-key", coordKey,
			"--listen", "127.0.0.1:0", "--log-level", "warn", "--name", fmt.Sprintf("n%d", i), "--state", states[i], "--socks", "",
			"--link-idle", b.opts.idleLinkAfter().String())
		if err != nil {
			return up, down, err
		}
	}
	for _, st := range states {
		if _, err := b.waitStatus(ctx, warren, st, nil); err != nil {
			return up, down, err
		}
	}
	const pw = "bench-password"
	if err := runCLI(ctx, warren, "network", "create", "idle", "--password", pw, "--state", states[0]); err != nil {
		return up, down, err
	}
	for _, st := range states[1:] {
		if err := runCLI(ctx, warren, "network", "join", "idle", "--password", pw, "--state", st); err != nil {
			return up, down, err
		}
	}
	allDirect := func(s nodeStatus) bool {
		return len(s.Peers) == n-1 && !slices.ContainsFunc(s.Peers, func(p peerStatus) bool { return p.Path != "direct" })
	}
	for _, st := range states {
		if _, err := b.waitStatus(ctx, warren, st, allDirect); err != nil {
			return up, down, err
		}
	}
	direct := time.Now()
	procs := append([]*proc{coord}, nodes...)
	defer func() {
		for _, p := range procs {
			p.stop(3 * time.Second)
		}
	}()
	// Start-up work (punching, probes, the first rounds of path checks) is not idle cost.
	if up, err = b.idleWindow(ctx, procs, b.opts.idleSettle); err != nil {
		return up, down, err
	}
	if err := load.Sleep(ctx, time.Until(direct.Add(b.opts.idleLinkAfter()))); err != nil {
		return up, down, err
	}
	allIdle := func(s nodeStatus) bool {
		return len(s.Peers) == n-1 && !slices.ContainsFunc(s.Peers, func(p peerStatus) bool { return p.Path != "idle" })
	}
	for _, st := range states {
		if _, err := b.waitStatus(ctx, warren, st, allIdle); err != nil {
			return up, down, fmt.Errorf("links did not wind down: %w", err)
		}
	}
	down, err = b.idleWindow(ctx, procs, b.opts.idleSettle/3)
	return up, down, err
}

// idleWindow waits settle, then measures procs (the coord first, then the nodes) over
// opts.idleWindow.
func (b *bench) idleWindow(ctx context.Context, procs []*proc, settle time.Duration) (idleCost, error) {
	if err := load.Sleep(ctx, settle); err != nil {
		return idleCost{}, err
	}
	w0, c0, err := idleSample(procs)
	if err != nil {
		return idleCost{}, err
	}
	t0 := time.Now()
	if err := load.Sleep(ctx, b.opts.idleWindow); err != nil {
		return idleCost{}, err
	}
	w1, c1, err := idleSample(procs)
	if err != nil {
		return idleCost{}, err
	}
	secs := time.Since(t0).Seconds()
	n := len(procs) - 1
	ic := idleCost{nodes: n, window: b.opts.idleWindow}
	ic.coordWakeups = (w1[0] - w0[0]) / secs
	ic.coordCPU = (c1[0] - c0[0]) / secs / float64(n) * 1e6
	for i := 1; i < len(procs); i++ {
		ic.wakeups = append(ic.wakeups, (w1[i]-w0[i])/secs)
		ic.cpus = append(ic.cpus, (c1[i]-c0[i])/secs*100)
	}
	return ic, nil
}

// idleSample reads each process's thread wake-ups so far and its CPU seconds so far.
func idleSample(ps []*proc) (wakeups, cpu []float64, err error) {
	for _, p := range ps {
		w, err := threadSwitches(p.pid())
		if err != nil {
			return nil, nil, err
		}
		c, err := cpuSeconds(p.pid())
		if err != nil {
			return nil, nil, err
		}
		wakeups, cpu = append(wakeups, w), append(cpu, c)
	}
	return wakeups, cpu, nil
}

// threadSwitches is the number of context switches of all of a process's threads so far
// (voluntary_ctxt_switches + nonvoluntary_ctxt_switches of /proc/PID/task/*/status): each one is a
// thread that went to sleep or was preempted, so over an idle window it counts wake-ups.
func threadSwitches(pid int) (float64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("threads of %d: %w", pid, err)
	}
	var sum float64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
				continue
			}
			x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("threads of %d: %s: %w", pid, l, err)
			}
			sum += x
		}
	}
	return sum, nil
}

// printIdleCost writes the idle rows, links up and wound down, with the targets (judged on the
// wound-down figures: the state an idle node settles in).
// atScale is the coord's CPU per node at scaleNodes simulated nodes (0 nodes: not measured).
func printIdleCost(w io.Writer, up, down idleCost, linkIdle time.Duration, scaleNodes int, atScale float64) {
	fmt.Fprintf(w, "\nIdle cost: %d idle nodes on loopback in one network, each with %d peers, over %s (median / worst node);\n"+
		"links up (all direct), then wound down (--link-idle %s here, 2m by default):\n\n", up.nodes, up.nodes-1, up.window, linkIdle)
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	uw, uxw := medianMax(up.wakeups)
	uc, uxc := medianMax(up.cpus)
	dw, dxw := medianMax(down.wakeups)
	dc, dxc := medianMax(down.cpus)
	rows := [][]string{
		{"", "links up", "wound down", "target", ""},
		{"node wake-ups/s", fmt.Sprintf("%.1f / %.1f", uw, uxw), fmt.Sprintf("%.1f / %.1f", dw, dxw), fmt.Sprintf("≤ %.0f", idleWakeupsTarget), verdict(dxw <= idleWakeupsTarget)},
		{"node CPU", fmt.Sprintf("%.2f%% / %.2f%%", uc, uxc), fmt.Sprintf("%.2f%% / %.2f%%", dc, dxc), fmt.Sprintf("≤ %.1f%%", idleCPUTarget), verdict(dxc <= idleCPUTarget)},
		{"coord CPU per node", fmt.Sprintf("%.1f µs/s", up.coordCPU), fmt.Sprintf("%.1f µs/s", down.coordCPU), fmt.Sprintf("≤ %.0f µs/s", idleCoordTarget), verdict(down.coordCPU <= idleCoordTarget)},
		{"coord wake-ups/s", fmt.Sprintf("%.1f", up.coordWakeups), fmt.Sprintf("%.1f", down.coordWakeups), "", ""},
	}
	if scaleNodes > 0 {
		rows = append(rows, []string{fmt.Sprintf("coord CPU per node, %d nodes", scaleNodes), "", fmt.Sprintf("%.1f µs/s", atScale),
			fmt.Sprintf("≤ %.0f µs/s", idleCoordTarget), verdict(atScale <= idleCoordTarget)})
	}
	writeAligned(w, rows)
	if scaleNodes > 0 {
		fmt.Fprintf(w, "(%d nodes: simulated by `warren-coord loadtest --idle %s`, logged in and idle, no peer links)\n", scaleNodes, up.window)
	}
}

// medianMax returns the median and the largest of xs (0, 0 for none).
func medianMax(xs []float64) (med, mx float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2], s[len(s)-1]
}

// measureCoordAtScale starts a fresh coord and holds opts.idleScale simulated nodes (`warren-coord
// loadtest`: real keys, the real control protocol and its keep-alives, no peer links) logged in and
// idle for opts.idleWindow, and returns the coord's CPU per node per second over that time, in µs.
// With ten nodes the coord's own timers dominate its idle cost; at scale what is left is the price of
// each node's keep-alives, which is what decides how many idle nodes one coord can hold.
func (b *bench) measureCoordAtScale(ctx context.Context) (float64, error) {
	bin := filepath.Join(b.opts.bin, "warren-coord")
	coord, addr, key, err := b.startCoord(ctx, "scale", b.opts.bin, filepath.Join(b.dir, "scale"))
	if err != nil {
		return 0, err
	}
	defer coord.stop(3 * time.Second)
	ctx, cancel := context.WithTimeout(ctx, b.opts.idleWindow+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "loadtest", "--coord", addr+"#"+key, "--nodes", strconv.Itoa(b.opts.idleScale),
		"--events", "20", "--idle", b.opts.idleWindow.String(), "--log-level", "off")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("loadtest: %w", err)
	}
	var res struct {
		Servers []struct {
			IdleCPUMicros float64 `json:"idle_cpu_us_per_node_s"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Servers) != 1 {
		return 0, fmt.Errorf("loadtest output %q: %v", out, err)
	}
	return res.Servers[0].IdleCPUMicros, nil
}
