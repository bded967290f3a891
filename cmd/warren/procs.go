package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/warren-net/warren/internal/gcfloor"
	"github.com/warren-net/warren/internal/memtrim"
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

// gcFloor is the least heap growth between two collections while they come fast (internal/gcfloor)
// unless GOGC is set: WARREN_GC_FLOOR_MIB overrides it, 0 turns it off. Measured on the packet path
// (bench rows warren-packet and warren, one run each, floors 0/16/32 MiB in turns, two rounds): 16
// MiB against none gave 4 streams 1.56x and 1.00x, 1 stream 1.14x (the other round's run without
// a floor stalled), CPU per GB 0.66x and 0.96x; 32 MiB no more. The stream path collects a few
// times a second under bulk and keeps GOGC=100 (and its memory).
const gcFloor = 16 << 20

func init() {
	if os.Getenv("GOGC") != "" {
		return // the user's choice
	}
	floor := uint64(gcFloor)
	if v, err := strconv.ParseUint(os.Getenv("WARREN_GC_FLOOR_MIB"), 10, 32); err == nil {
		floor = v << 20
	}
	if floor > 0 {
		gcfloor.Start(floor)
	}
}

// trimAfter is how long a node must go without a collection before it returns its spare heap to
// the system (internal/memtrim); WARREN_TRIM_AFTER overrides it, 0 turns it off. Measured: 10,000
// idle SOCKS connections took node A from 23.4 to 111.4 MiB without a trim, from 23.6 to 87.0 with one.
const trimAfter = 2 * time.Second

func init() {
	after := trimAfter
	if v := os.Getenv("WARREN_TRIM_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			fmt.Fprintf(os.Stderr, "warren: WARREN_TRIM_AFTER wants a duration (2s; 0 = off): %q\n", v)
		} else {
			after = d
		}
	}
	if after > 0 {
		memtrim.Start(after)
	}
}
