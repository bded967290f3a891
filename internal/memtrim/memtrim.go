// Package memtrim gives a process's spare heap back to the operating system once the process has
// gone quiet: when no collection has run for a while and the heap holds much more than its live
// objects (garbage not yet collected, free spans the runtime keeps), it runs debug.FreeOSMemory.
//
// Go keeps what a burst of work made it map: with no allocation after the burst there is no
// collection, and its background scavenger returns memory only above the heap goal, twice the live
// heap. A node that opened 10,000 connections in a few seconds and then holds them idle kept the
// handshakes' garbage and the collector's headroom resident, about a fifth of its RSS (measured:
// 10,000 idle SOCKS connections took node A to 111.4 MiB without a trim, 87.0 with one). The trim
// costs one forced collection per quiet spell, and only when it returns enough to matter; a busy
// process collects often enough that it never comes to one.
package memtrim

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// minExcess is the least spare heap worth a trim; a trim also needs the spare heap to be at least
// an eighth of the live one (a large idle heap keeps some slack).
const minExcess = 4 << 20

// Worth reports whether a heap is worth a trim: objects bytes in heap objects (live at the last
// collection, live bytes, plus what was allocated since, mostly garbage) and free bytes in free
// spans not yet returned. Free slots inside spans that hold live objects (fragmentation) do not
// count: no trim can return them, and counting them would trim again after every trim.
func Worth(objects, free, live uint64) bool {
	spare := free
	if objects > live {
		spare += objects - live
	}
	return spare >= minExcess && spare >= live/8
}

// Trimmer watches the collector and trims after each quiet spell. Stop ends it.
type Trimmer struct {
	quiet  time.Duration
	sample []metrics.Sample

	mu      sync.Mutex
	timer   *time.Timer // fires quiet after the last collection
	stopped bool
	ownGC   bool // the collection under way is a trim's: it starts no quiet spell
	spells  int  // quiet spells started
	checks  int  // quiet spells looked at
	trims   int  // of which trimmed
}

// Start trims the process's heap whenever quiet has passed since the last collection and the
// heap is worth a trim. Call it once per process.
func Start(quiet time.Duration) *Trimmer {
	t := newTrimmer(quiet)
	t.arm()
	return t
}

// newTrimmer returns a Trimmer that is not hooked to the collector yet (arm does that).
func newTrimmer(quiet time.Duration) *Trimmer {
	t := &Trimmer{quiet: quiet, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}}
	t.timer = time.AfterFunc(time.Hour, t.check)
	t.timer.Stop()
	return t
}

// Stop ends the trims. Safe on nil.
func (t *Trimmer) Stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	t.timer.Stop()
}

// Counts returns how many quiet spells the Trimmer started, how many it looked at and how many of
// those it trimmed.
func (t *Trimmer) Counts() (spells, checks, trims int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spells, t.checks, t.trims
}

// sentinel is garbage from birth: its cleanup runs after the collection that finds it, which makes
// it the hook "a collection just ended".
type sentinel struct{ _ [16]byte }

func (t *Trimmer) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Trimmer) { t.collected() }, t)
}

// collected runs on the cleanup goroutine after each collection: the quiet spell starts again,
// unless the collection was a trim's (so a process trims at most once per collection of its own).
func (t *Trimmer) collected() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if t.ownGC {
		t.ownGC = false
	} else {
		t.spells++
		t.timer.Reset(t.quiet)
	}
	t.arm()
}

// check runs quiet after the last collection (on the timer's goroutine) and trims if it is worth it.
func (t *Trimmer) check() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	worth := Worth(v[1], v[2], v[0])
	t.checks++
	if worth {
		t.trims++
		t.ownGC = true
	}
	t.mu.Unlock()
	if worth {
		debug.FreeOSMemory()
	}
}
