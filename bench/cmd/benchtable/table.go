package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/warren-net/warren/bench/internal/load"
)

// runResult is one run of every measurement of a row.
type runResult struct {
	gbps1, gbps4     float64       // bulk throughput, 1 and 4 streams
	up1              float64       // upload (client to server) throughput, 1 stream; 0: not measured
	p50, p99         time.Duration // 64-byte round trips
	loadedP50        time.Duration // 64-byte round trips beside a 1-stream bulk run, on a connection of their own
	loadedP99        time.Duration
	connsPerSec      float64  // new SOCKS connections per second (0: not measured)
	cpuPerGB         float64  // CPU seconds of the VPN processes per GB moved (0: none)
	rssIdle, rssLoad float64  // largest VPN process resident set, MiB (0: none)
	udp60, udpFast   udpStats // 64-byte UDP round trips at 60 packets/s and back to back
}

// udpStats sums up one UDP round-trip measurement (sent 0: not measured).
type udpStats struct {
	p50, p99, p999 time.Duration
	lost, sent     int
	cpuPerRT       time.Duration // CPU time of the VPN processes per round trip (back to back only)
}

func newUDPStats(r load.UDPResult, sent int) udpStats {
	return udpStats{p50: load.Percentile(r.RTTs, 50), p99: load.Percentile(r.RTTs, 99),
		p999: load.Percentile(r.RTTs, 99.9), lost: r.Lost, sent: sent}
}

func (u udpStats) String() string {
	return fmt.Sprintf("p50 %v p99 %v p99.9 %v lost %d/%d cpu/rt %v", u.p50, u.p99, u.p999, u.lost, u.sent, u.cpuPerRT)
}

func (r runResult) String() string {
	return fmt.Sprintf("1x %.2f Gbit/s, 4x %.2f Gbit/s, up %.2f Gbit/s, rtt p50 %v p99 %v, loaded p50 %v p99 %v, %.0f conn/s, %.2f CPU s/GB, rss %.1f/%.1f MiB; udp 60/s %v; udp back to back %v",
		r.gbps1, r.gbps4, r.up1, r.p50, r.p99, r.loadedP50, r.loadedP99, r.connsPerSec, r.cpuPerGB, r.rssIdle, r.rssLoad, r.udp60, r.udpFast)
}

// rowResult is a row of the table: the per-column medians of its runs.
type rowResult struct {
	name   string
	socks  bool // connections per second measured
	vpn    bool // CPU and RSS measured
	median runResult
	idle   *idleResult // nil: not measured
	// won, for a best-of row, says which variant gave each column's figure.
	won string
}

// idleResult is the idle-connections check of one row.
type idleResult struct {
	res       load.IdleResult
	rss0, rss []float64 // each VPN process's resident set before and with the connections open, MiB
}

// median takes the median of each column separately.
func median(runs []runResult) runResult {
	f := func(get func(runResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	d := func(get func(runResult) time.Duration) time.Duration {
		return time.Duration(f(func(r runResult) float64 { return float64(get(r)) }))
	}
	u := func(get func(runResult) udpStats) udpStats {
		var lost, sent int
		for _, r := range runs {
			lost += get(r).lost
			sent += get(r).sent
		}
		return udpStats{
			p50:      d(func(r runResult) time.Duration { return get(r).p50 }),
			p99:      d(func(r runResult) time.Duration { return get(r).p99 }),
			p999:     d(func(r runResult) time.Duration { return get(r).p999 }),
			cpuPerRT: d(func(r runResult) time.Duration { return get(r).cpuPerRT }),
			lost:     lost, sent: sent,
		}
	}
	return runResult{
		udp60:       u(func(r runResult) udpStats { return r.udp60 }),
		udpFast:     u(func(r runResult) udpStats { return r.udpFast }),
		gbps1:       f(func(r runResult) float64 { return r.gbps1 }),
		gbps4:       f(func(r runResult) float64 { return r.gbps4 }),
		up1:         f(func(r runResult) float64 { return r.up1 }),
		p50:         d(func(r runResult) time.Duration { return r.p50 }),
		p99:         d(func(r runResult) time.Duration { return r.p99 }),
		loadedP50:   d(func(r runResult) time.Duration { return r.loadedP50 }),
		loadedP99:   d(func(r runResult) time.Duration { return r.loadedP99 }),
		connsPerSec: f(func(r runResult) float64 { return r.connsPerSec }),
		cpuPerGB:    f(func(r runResult) float64 { return r.cpuPerGB }),
		rssIdle:     f(func(r runResult) float64 { return r.rssIdle }),
		rssLoad:     f(func(r runResult) float64 { return r.rssLoad }),
	}
}

// bestOf merges the rows of one row measured in several variants (GOMAXPROCS, low latency) into one row named
// name: each column takes the better figure (higher throughput and connections per second, lower
// latency, CPU and memory), and won lists which variant gave it.
func bestOf(name string, vs []rowResult) rowResult {
	best := vs[0]
	best.name, best.idle = name, nil
	var won []string
	pick := func(col string, better func(a, b runResult) bool, take func(dst *runResult, src runResult)) {
		w := vs[0]
		for _, v := range vs[1:] {
			if better(v.median, w.median) {
				w = v
			}
		}
		take(&best.median, w.median)
		won = append(won, fmt.Sprintf("%s %s", col, strings.TrimPrefix(w.name, vs[0].name[:strings.IndexByte(vs[0].name, '@')])))
	}
	hi := func(get func(runResult) float64) func(a, b runResult) bool {
		return func(a, b runResult) bool { return get(a) > get(b) }
	}
	lo := func(get func(runResult) float64) func(a, b runResult) bool {
		return func(a, b runResult) bool { return get(a) < get(b) }
	}
	pick("1 stream", hi(func(r runResult) float64 { return r.gbps1 }), func(d *runResult, s runResult) { d.gbps1 = s.gbps1 })
	pick("4 streams", hi(func(r runResult) float64 { return r.gbps4 }), func(d *runResult, s runResult) { d.gbps4 = s.gbps4 })
	pick("upload", hi(func(r runResult) float64 { return r.up1 }), func(d *runResult, s runResult) { d.up1 = s.up1 })
	pick("RTT", lo(func(r runResult) float64 { return float64(r.p50) }), func(d *runResult, s runResult) { d.p50, d.p99 = s.p50, s.p99 })
	pick("RTT loaded", lo(func(r runResult) float64 { return float64(r.loadedP50) }), func(d *runResult, s runResult) {
		d.loadedP50, d.loadedP99 = s.loadedP50, s.loadedP99
	})
	if best.socks {
		pick("new conns", hi(func(r runResult) float64 { return r.connsPerSec }), func(d *runResult, s runResult) { d.connsPerSec = s.connsPerSec })
	}
	pick("CPU/GB", lo(func(r runResult) float64 { return r.cpuPerGB }), func(d *runResult, s runResult) { d.cpuPerGB = s.cpuPerGB })
	pick("RSS", lo(func(r runResult) float64 { return r.rssLoad }), func(d *runResult, s runResult) { d.rssIdle, d.rssLoad = s.rssIdle, s.rssLoad })
	pick("UDP 60/s", lo(func(r runResult) float64 { return float64(r.udp60.p50) }), func(d *runResult, s runResult) { d.udp60 = s.udp60 })
	pick("UDP back to back", lo(func(r runResult) float64 { return float64(r.udpFast.p50) }), func(d *runResult, s runResult) { d.udpFast = s.udpFast })
	pick("UDP CPU/rt", lo(func(r runResult) float64 { return float64(r.udpFast.cpuPerRT) }), func(d *runResult, s runResult) { d.udpFast.cpuPerRT = s.udpFast.cpuPerRT })
	best.won = strings.Join(won, ", ")
	return best
}

// printTable writes the aligned table, warren's ratios and the notes.
func printTable(w io.Writer, o options, rows []rowResult, notes []string, took time.Duration, load0, others string) {
	fmt.Fprintf(w, "\nwarren bench, %s, %d CPUs (%s), load average %s at start, %s at end\n",
		time.Now().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), cpuModel(), load0, loadAvg())
	fmt.Fprintf(w, "other processes and steal during the run: %s\n", others)
	dir := "server to client"
	if o.upload {
		dir = "client to server (-upload)"
	}
	fmt.Fprintf(w, "median of %d runs; bulk: %s, %v measured after %v warmup; RTT: %d x 64 bytes; new conns: up to %d in %v; wg MTU %d; took %v\n",
		o.runs, dir, o.dur, o.warmup, o.rttN, o.conns, o.connLimit, o.wgMTU, took.Round(time.Second))
	fmt.Fprintf(w, "UDP: 64-byte datagrams one at a time, %d at 60/s and %d back to back per run, lost = not back in %v (summed over runs)\n",
		o.udpN60, o.udpNFast, o.udpLoss)
	apps := "as shipped (-apps-awake=false)"
	if o.appsAwake {
		apps = godebugAwake + " (-apps-awake)"
	}
	fmt.Fprintf(w, "driver and load server: %s\n\n", apps)
	head := []string{"row", "1 stream", "4 streams", "upload", "RTT p50", "RTT p99", "loaded p50", "loaded p99", "new conns", "CPU s/GB", "RSS idle", "RSS load"}
	unit := []string{"", "Gbit/s", "Gbit/s", "Gbit/s", "µs", "µs", "µs", "µs", "per s", "A+B", "MiB", "MiB"}
	table := [][]string{head, unit}
	for _, r := range rows {
		m := r.median
		cells := []string{r.name, fmt.Sprintf("%.2f", m.gbps1), fmt.Sprintf("%.2f", m.gbps4), "-",
			fmt.Sprintf("%.0f", us(m.p50)), fmt.Sprintf("%.0f", us(m.p99)),
			fmt.Sprintf("%.0f", us(m.loadedP50)), fmt.Sprintf("%.0f", us(m.loadedP99)), "-", "-", "-", "-"}
		if m.up1 > 0 {
			cells[3] = fmt.Sprintf("%.2f", m.up1)
		}
		if r.socks {
			cells[8] = fmt.Sprintf("%.0f", m.connsPerSec)
		}
		if r.vpn {
			cells[9] = fmt.Sprintf("%.2f", m.cpuPerGB)
			cells[10] = fmt.Sprintf("%.1f", m.rssIdle)
			cells[11] = fmt.Sprintf("%.1f", m.rssLoad)
		}
		table = append(table, cells)
	}
	writeAligned(w, table)

	udpTable := [][]string{
		{"UDP round trips", "60/s p50", "p99", "p99.9", "lost", "fast p50", "p99", "p99.9", "lost", "CPU/rt"},
		{"64 bytes", "µs", "µs", "µs", "", "µs", "µs", "µs", "", "µs A+B"},
	}
	for _, r := range rows {
		m := r.median
		if m.udp60.sent == 0 && m.udpFast.sent == 0 {
			continue
		}
		cells := []string{r.name}
		for _, u := range []udpStats{m.udp60, m.udpFast} {
			cells = append(cells, fmt.Sprintf("%.0f", us(u.p50)), fmt.Sprintf("%.0f", us(u.p99)),
				fmt.Sprintf("%.0f", us(u.p999)), fmt.Sprintf("%d/%d", u.lost, u.sent))
		}
		cells = append(cells, "-")
		if r.vpn && m.udpFast.sent > 0 {
			cells[len(cells)-1] = fmt.Sprintf("%.1f", us(m.udpFast.cpuPerRT))
		}
		udpTable = append(udpTable, cells)
	}
	if len(udpTable) > 2 {
		fmt.Fprintln(w)
		writeAligned(w, udpTable)
	}
	for _, r := range rows {
		if r.won != "" {
			fmt.Fprintf(w, "\n%s: the best of its variants per column (@GOMAXPROCS; ll: low latency): %s\n", r.name, r.won)
		}
	}

	byName := map[string]runResult{}
	for _, r := range rows {
		byName[r.name] = r.median
	}
	fmt.Fprintln(w)
	for _, wr := range []string{"warren", "warren-packet", "warren-tun", "warren-run"} {
		x, ok := byName[wr]
		if !ok {
			continue
		}
		for _, base := range []string{"peer+socks", "peer-fwd", "peer-tun", "direct"} {
			if base == "peer-tun" && wr != "warren-tun" && wr != "warren-run" || base == "peer-fwd" && wr == "warren-tun" {
				continue
			}
			y, ok := byName[base]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "%s/%s: throughput 1 stream %.2fx, 4 streams %.2fx; RTT p50 %.2fx, p99 %.2fx, loaded p50 %.2fx",
				wr, base, x.gbps1/y.gbps1, x.gbps4/y.gbps4, us(x.p50)/us(y.p50), us(x.p99)/us(y.p99), us(x.loadedP50)/us(y.loadedP50))
			if x.up1 > 0 && y.up1 > 0 {
				fmt.Fprintf(w, "; upload %.2fx", x.up1/y.up1)
			}
			if x.udp60.sent > 0 && y.udp60.sent > 0 {
				fmt.Fprintf(w, "; UDP 60/s p50 %.2fx, p99 %.2fx; back to back p50 %.2fx",
					us(x.udp60.p50)/us(y.udp60.p50), us(x.udp60.p99)/us(y.udp60.p99), us(x.udpFast.p50)/us(y.udpFast.p50))
			}
			fmt.Fprintln(w)
		}
	}
	if x, ok := byName["warren"]; ok {
		if y, ok := byName["warren-base"]; ok {
			fmt.Fprintf(w, "warren/warren-base: throughput 1 stream %.2fx, 4 streams %.2fx; RTT p50 %.2fx, p99 %.2fx, loaded p50 %.2fx, p99 %.2fx; new conns %.2fx; CPU/GB %.2fx",
				x.gbps1/y.gbps1, x.gbps4/y.gbps4, us(x.p50)/us(y.p50), us(x.p99)/us(y.p99), us(x.loadedP50)/us(y.loadedP50), us(x.loadedP99)/us(y.loadedP99),
				x.connsPerSec/y.connsPerSec, x.cpuPerGB/y.cpuPerGB)
			if x.udp60.sent > 0 && y.udp60.sent > 0 {
				fmt.Fprintf(w, "; UDP 60/s p50 %.2fx, p99 %.2fx; back to back p50 %.2fx, CPU per round trip %.2fx",
					us(x.udp60.p50)/us(y.udp60.p50), us(x.udp60.p99)/us(y.udp60.p99), us(x.udpFast.p50)/us(y.udpFast.p50),
					us(x.udpFast.cpuPerRT)/us(y.udpFast.cpuPerRT))
			}
			fmt.Fprintln(w)
		}
	}
	for _, r := range rows {
		if r.idle == nil {
			continue
		}
		ir := r.idle.res
		fmt.Fprintf(w, "%s: %d idle SOCKS connections at once: %d open in %.1fs, %d failed, %d broken while held; RSS MiB",
			r.name, o.idle, ir.Open, ir.OpenTime.Seconds(), ir.Failed, ir.Broken)
		for i := range r.idle.rss {
			fmt.Fprintf(w, " %c %.1f -> %.1f", 'A'+i, r.idle.rss0[i], r.idle.rss[i])
		}
		fmt.Fprintln(w)
		if ir.FirstErr != nil {
			fmt.Fprintf(w, "  first failure: %v\n", ir.FirstErr)
		}
	}
	fmt.Fprintln(w, "\nupload: one stream from the client to the server (the load server discards; bytes the client wrote in the window), after the download runs; not in CPU s/GB.")
	fmt.Fprintln(w, "loaded: 64-byte round trips on a connection of their own, back to back, during the first 3/4 of the 1-stream bulk window (a queue the bulk stream builds on the path shows here).")
	fmt.Fprintln(w, "CPU s/GB: user+system CPU of both VPN processes during the bulk windows, per GB received.")
	fmt.Fprintln(w, "UDP CPU/rt: user+system CPU of both VPN processes during the back-to-back UDP round trips, per round trip.")
	fmt.Fprintln(w, "RSS: the larger of the two VPN processes, idle after setup, and under load halfway through the bulk runs (max of 1 and 4 streams).")
	for _, n := range notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// writeAligned prints cells in columns: the first left-aligned, the others right-aligned.
func writeAligned(w io.Writer, table [][]string) {
	widths := make([]int, len(table[0]))
	for _, row := range table {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, row := range table {
		var sb strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i == 0 {
				sb.WriteString(c + pad)
			} else {
				sb.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
