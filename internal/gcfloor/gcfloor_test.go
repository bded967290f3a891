package gcfloor

import (
	"runtime"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		base        int
		floor, live uint64
		want        int
	}{
		{100, 32 * mib, 4 * mib, 800},     // small heap: goal 4+32 MiB
		{100, 32 * mib, 5 * mib, 650},     // 640 rounded up to a step of 25
		{100, 32 * mib, 60 * mib, 100},    // large heap: GOGC=100 as before
		{200, 32 * mib, 32 * mib, 200},    // never below the user's GOGC
		{100, 32 * mib, 1024, maxPercent}, // bounded
		{100, 32 * mib, 0, maxPercent},
	} {
		if got := Percent(tc.base, tc.floor, tc.live); got != tc.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.base, tc.floor, tc.live, got, tc.want)
		}
	}
}

// TestFloorFollowsCollections: after a collection the percentage is raised for this test's small
// heap, and Stop puts the starting one back.
func TestFloorFollowsCollections(t *testing.T) {
	base := Current()
	if base < 0 {
		t.Skip("GOGC=off: the floor has nothing to raise")
	}
	f := Start(512 << 20)
	deadline := time.Now().Add(time.Minute)
	for Current() == base {
		if time.Now().After(deadline) {
			t.Fatalf("percentage still %d a minute of collections after Start", base)
		}
		runtime.GC() // the sentinel's cleanup runs after a collection; wait for it
		runtime.Gosched()
	}
	if got := Current(); got <= base || got > maxPercent {
		t.Errorf("percentage %d after a collection, want above %d and at most %d", got, base, maxPercent)
	}
	f.Stop()
	if got := Current(); got != base {
		t.Errorf("percentage %d after Stop, want %d back", got, base)
	}
	runtime.GC()
	if got := Current(); got != base {
		t.Errorf("percentage %d after Stop and a collection, want %d", got, base)
	}
	f.Stop() // idempotent
	var nilFloor *Floor
	nilFloor.Stop()
}
