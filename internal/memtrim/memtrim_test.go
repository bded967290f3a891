package memtrim

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

func TestWorth(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		objects, free, live uint64
		want                bool
	}{
		{8 * mib, 12 * mib, 8 * mib, true},   // 12 MiB of free spans
		{20 * mib, 0, 8 * mib, true},         // 12 MiB allocated since the last collection
		{9 * mib, 2 * mib, 8 * mib, false},   // 3 MiB: not worth a collection
		{85 * mib, 4 * mib, 80 * mib, false}, // 9 MiB spare of 80 live: the slack of a large idle heap
		{90 * mib, 10 * mib, 80 * mib, true}, // 20 MiB of 80
		{7 * mib, 0, 9 * mib, false},         // fewer objects than were live (the heap shrank)
		{0, minExcess, 0, true},              // nothing live, 4 MiB spare
		{0, minExcess - 1, 0, false},
	} {
		if got := Worth(tc.objects, tc.free, tc.live); got != tc.want {
			t.Errorf("Worth(%d, %d, %d MiB) = %v, want %v", tc.objects>>20, tc.free>>20, tc.live>>20, got, tc.want)
		}
	}
}

// TestOwnCollectionStartsNoSpell: the collection a trim runs starts no quiet spell (the process
// trims at most once per collection of its own); the next collection does.
func TestOwnCollectionStartsNoSpell(t *testing.T) {
	tr := newTrimmer(time.Hour)
	defer tr.Stop()
	tr.ownGC = true
	tr.collected() // the trim's collection
	if spells, _, _ := tr.Counts(); spells != 0 {
		t.Fatalf("%d spells after a trim's collection, want 0", spells)
	}
	tr.collected() // the process's own
	if spells, _, _ := tr.Counts(); spells != 1 {
		t.Fatalf("%d spells after a collection, want 1", spells)
	}
}

var keep [][]byte

func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestTrimReturnsSpareHeap, on the real collector: 64 MiB that was live becomes garbage; a check
// after the collection that frees it returns it to the OS (the heap's released bytes grow by most
// of it). When a check does not trim is TestWorth's.
func TestTrimReturnsSpareHeap(t *testing.T) {
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.GC()
	before := released()
	keep = nil
	runtime.GC()
	tr := newTrimmer(time.Hour) // not hooked: the test runs the checks
	tr.check()
	if _, _, trims := tr.Counts(); trims != 1 {
		t.Fatalf("%d trims after 64 MiB became free, want 1", trims)
	}
	if got := released() - before; got < 32<<20 {
		t.Errorf("the trim returned %d MiB, want most of 64", got>>20)
	}
}

// TestQuietSpellFollowsCollection: once started, every collection starts a quiet spell whose end
// checks the heap.
func TestQuietSpellFollowsCollection(t *testing.T) {
	tr := Start(time.Millisecond)
	defer tr.Stop()
	_, checks, _ := tr.Counts()
	runtime.GC()
	testkit.Eventually(t, 30*time.Second, func() bool { _, c, _ := tr.Counts(); return c > checks },
		"no check after a collection")
	_, checks, _ = tr.Counts()
	runtime.GC()
	testkit.Eventually(t, 30*time.Second, func() bool { _, c, _ := tr.Counts(); return c > checks },
		"no check after the next collection")
}
