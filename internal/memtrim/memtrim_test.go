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
		mapped, live uint64
		want         bool
	}{
		{20 * mib, 8 * mib, true},   // 12 MiB spare
		{11 * mib, 8 * mib, false},  // 3 MiB: not worth a collection
		{89 * mib, 80 * mib, false}, // 9 MiB spare of 80 live: the slack of a large idle heap
		{100 * mib, 80 * mib, true}, // 20 MiB of 80
		{8 * mib, 9 * mib, false},   // less mapped than was live (it shrank)
		{minExcess, 0, true},        // nothing live, 4 MiB spare
		{minExcess - 1, 0, false},
	} {
		if got := Worth(tc.mapped, tc.live); got != tc.want {
			t.Errorf("Worth(%d MiB, %d MiB) = %v, want %v", tc.mapped>>20, tc.live>>20, got, tc.want)
		}
	}
}

var keep [][]byte

func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestTrimsAfterQuiet, on the real collector: 64 MiB that was live becomes garbage; after the
// collection that frees it and a quiet spell the Trimmer returns it to the OS (the heap's released
// bytes grow by most of it); the next spell, with nothing new to return, does not trim again.
func TestTrimsAfterQuiet(t *testing.T) {
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.GC()
	before := released()
	tr := Start(20 * time.Millisecond)
	defer tr.Stop()
	keep = nil
	runtime.GC() // frees the 64 MiB, and starts a quiet spell
	testkit.Eventually(t, 30*time.Second, func() bool { _, trims := tr.Counts(); return trims >= 1 },
		"no trim after 64 MiB became free")
	if got := released() - before; got < 32<<20 {
		t.Errorf("the trim returned %d MiB, want most of 64", got>>20)
	}
	checks, _ := tr.Counts()
	testkit.Eventually(t, 30*time.Second, func() bool { c, _ := tr.Counts(); return c > checks },
		"the trim's own collection started no quiet spell")
	if _, trims := tr.Counts(); trims != 1 {
		t.Errorf("%d trims, want 1: the spell after a trim has nothing to return", trims)
	}
}
