package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// cpuMeter tells how much CPU other processes on the machine (and the hypervisor, as steal time)
// used while the benchmark ran: the machine's busy time from /proc/stat minus what this process and
// its children used. Numbers taken on a busy machine are low, so the table says how quiet it was.
type cpuMeter struct {
	machine0, ours0 float64
}

func newCPUMeter(b *bench) *cpuMeter {
	return &cpuMeter{machine0: machineBusy(), ours0: b.ourCPU()}
}

// others returns the CPU seconds used by other processes since the meter started.
func (m *cpuMeter) others(b *bench) float64 {
	return (machineBusy() - m.machine0) - (b.ourCPU() - m.ours0)
}

// ourCPU is the CPU time of this process, its exited children (CLI calls) and its running ones.
func (b *bench) ourCPU() float64 {
	var sum float64
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			sum += tv(ru.Utime) + tv(ru.Stime)
		}
	}
	for _, p := range b.procs {
		if s, err := cpuSeconds(p.pid()); err == nil {
			sum += s
		}
	}
	return sum
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// machineBusy is the non-idle CPU time of all CPUs since boot, in seconds (/proc/stat "cpu" line:
// user nice system idle iowait irq softirq steal ...; idle and iowait are not busy).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return float64(busy) / clockTicks
}

// describe says how much of the machine the others used during wall seconds.
func (m *cpuMeter) describe(b *bench, wall float64) string {
	o := max(m.others(b), 0)
	return fmt.Sprintf("%.1f CPU-s, %.0f%% of the machine", o, 100*o/(wall*float64(runtime.NumCPU())))
}
