package main

import (
	"flag"
	"os"
	"strings"
)

// Low-latency mode (warren up --low-latency) keeps the Go runtime's monitor thread, sysmon, from
// sleeping deeply. When every P of a process is idle, sysmon sleeps until the next timer, and the
// next system call of any goroutine wakes it (entersyscall), after which it polls every 20 µs until
// it sees the process idle again and sleeps again. A node is idle between the packets of a round
// trip, so every round trip paid a thread wake-up and a few 20 µs timers on the other CPU; on a VM,
// where each timer and wake-up exits to the hypervisor, that was a large share of the node's CPU.
// GODEBUG=schedtrace=N with N > 0 is the runtime's only switch that turns the deep sleep off
// (proc.go, sysmon: `debug.schedtrace <= 0 && ...`): sysmon then backs off to one wake-up every
// 10 ms when nothing happens and is never woken by a system call. N is in milliseconds, the period
// of the scheduler trace that it also turns on; the largest value prints one trace line after
// 24.8 days of uptime (or at once, if the machine has been up longer) and no more for 24.8 days.
//
// Measured on the 2-core bench VM (BENCHMARKS.md, stop 30, both nodes with it): stream path
// 3.23 → 4.58 Gbit/s, RTT p50 202 → 145 µs, CPU per GB 3.30 → 2.61 s; the cost is about 100
// wake-ups a second and 0.1-0.25% CPU while idle (2-4 and 0.00% without), which is why it is not the
// default.
// The setting is read once, when the runtime starts, so warren re-executes itself with it.
const sysmonAwake = "schedtrace=2147483647"

// lowLatencyEnv is the environment variable that turns low-latency mode on as --low-latency does.
const lowLatencyEnv = "WARREN_LOW_LATENCY"

// lowLatencyActive reports whether this process runs with sysmon's deep sleep off: with
// sysmonAwake or with any scheduler trace the user asked for in GODEBUG.
func lowLatencyActive() bool {
	for _, kv := range strings.Split(os.Getenv("GODEBUG"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "schedtrace="); ok && v != "" && v != "0" {
			return true
		}
	}
	return false
}

// lowLatencyEnviron is the environment to re-execute with: env with sysmonAwake added to GODEBUG
// (after the user's settings, which it keeps).
func lowLatencyEnviron(env []string) []string {
	out := make([]string, 0, len(env)+1)
	godebug := sysmonAwake
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + sysmonAwake
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GODEBUG="+godebug)
}

// withoutSysmonAwake is environ without the setting lowLatencyEnviron added, for the command
// `warren up -- COMMAND` runs: a Go program there runs as it would without warren.
func withoutSysmonAwake(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			var keep []string
			for _, s := range strings.Split(v, ",") {
				if s != sysmonAwake && s != "" {
					keep = append(keep, s)
				}
			}
			if len(keep) == 0 {
				continue
			}
			kv = "GODEBUG=" + strings.Join(keep, ",")
		}
		out = append(out, kv)
	}
	return out
}

// flagSet reports whether flag name was given, on the command line or in the config file.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
