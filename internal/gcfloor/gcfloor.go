// Package gcfloor keeps the Go collector's heap goal at least a fixed number of bytes above the live
// heap while the process allocates fast: GOGC=100 otherwise, and whenever the live heap is larger
// than that floor.
//
// A node's live heap is a few MiB, so at GOGC=100 the collector runs every few MiB allocated. On the
// packet path quic-go allocates a copy of every DATAGRAM on send and two on receive (its API hands
// out owned slices): at a few hundred Mbit/s that was 35-55 collections a second, each waking the
// collector's workers; measured (two rounds), a 16 MiB floor moved 1.0-1.6x the bytes per second
// through the packet path at 0.66-0.96x the CPU per GB. The floor engages only when collections
// come less than engageBelow apart and lets go when they come more than releaseAbove apart: the
// stream path's and TUN mode's come 300-700 ms apart under bulk, so they keep GOGC=100 and their
// memory (a floor held through TUN bulk runs cost it 10 MiB and, in alternating runs, throughput),
// while the packet path's, under the floor, still come less than 100 ms apart. A node holding 10,000 idle
// connections (60 MiB live) collects at twice its live heap either way, and the extra memory is
// bounded by the floor whatever the load.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// maxPercent bounds the percentage the floor can ask for (a live heap below floor/20).
const maxPercent = 2000

// engageBelow and releaseAbove are the intervals between collections that turn the floor on (the
// process allocates fast) and off again (it has calmed down).
const (
	engageBelow  = 50 * time.Millisecond
	releaseAbove = 200 * time.Millisecond
)

// Floor adjusts the collector's percentage after every collection. Stop ends it.
type Floor struct {
	floor  uint64
	base   int // the percentage the process started with (GOGC or 100)
	sample []metrics.Sample

	mu      sync.Mutex
	percent int       // the percentage last set
	engaged bool      // collections came fast: the floor applies
	lastGC  time.Time // when the previous collection ended (as seen by its cleanup)
	stopped bool
}

// Start hooks the collector: from the next collection on, while collections come less than
// engageBelow apart, the heap goal is at least floor bytes above the live heap. It returns the Floor,
// or nil when the collector is off (GOGC=off): then there is nothing to raise. Call it once per
// process.
func Start(floor uint64) *Floor {
	base := Current()
	if base < 0 {
		return nil
	}
	f := &Floor{floor: floor, base: base, percent: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	f.arm()
	return f
}

// Current returns the collector's percentage now (GOGC, or what SetGCPercent set), -1 when off.
func Current() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	return int(int64(s[0].Value.Uint64()))
}

// Stop puts the starting percentage back; the next collection ends the adjustments. Safe on nil.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(f.base)
	}
}

// sentinel is garbage from birth: its cleanup runs after the collection that finds it, which makes
// it the hook "a collection just ended".
type sentinel struct{ _ [16]byte }

func (f *Floor) arm() {
	s := new(sentinel)
	runtime.AddCleanup(s, func(f *Floor) { f.collected() }, f)
}

// collected runs on the cleanup goroutine after each collection.
func (f *Floor) collected() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	metrics.Read(f.sample)
	if v := f.sample[0].Value; v.Kind() == metrics.KindUint64 {
		f.adjust(time.Now(), v.Uint64())
	}
	f.arm()
}

// adjust sets the percentage for a collection that ended at now with live bytes live.
func (f *Floor) adjust(now time.Time, live uint64) {
	if !f.lastGC.IsZero() {
		switch gap := now.Sub(f.lastGC); {
		case gap < engageBelow:
			f.engaged = true
		case gap > releaseAbove:
			f.engaged = false
		}
	}
	f.lastGC = now
	p := f.base
	if f.engaged {
		p = Percent(f.base, f.floor, live)
	}
	if p != f.percent {
		f.percent = p
		debug.SetGCPercent(p)
	}
}

// Percent is the collector percentage that keeps the heap goal at least floor bytes above a live
// heap of live bytes, and never below base: max(base, floor/live) as a percentage, in steps of 25
// so that small changes of the live heap do not reset it after every collection.
func Percent(base int, floor, live uint64) int {
	if live == 0 {
		return max(base, maxPercent)
	}
	p := int(min(floor*100/live, maxPercent))
	p = (p + 24) / 25 * 25
	return max(base, min(p, maxPercent))
}
