package main

import (
	"os"
	"runtime"
)

// A node gets half of the CPUs Go would use (at least one) unless GOMAXPROCS is set. Its traffic
// always has a process at each end on the same machine (the app behind the proxy, the exposed
// service), and quic-go serializes each peer link on one goroutine, so more Ps add little
// parallelism: mostly threads waking each other (futex) and spinning for work, which cost CPU and
// latency. On the 2-core bench machine one P instead of two gave, in one interleaved run, 0.62x the
// stream path's RTT p50, 0.80x its CPU per GB and 1.14x its throughput, and 1.36x the packet path's
// throughput (see BENCHMARKS.md). It applies to every subcommand; only `up` runs long enough to matter.
func init() {
	if os.Getenv("GOMAXPROCS") != "" {
		return // the user's choice
	}
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2)) // GOMAXPROCS(0): NumCPU or the container's limit
}
