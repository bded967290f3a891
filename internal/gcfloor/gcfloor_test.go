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

// TestFloorEngagesWhenCollectionsComeFast: the floor applies while collections come less than
// engageBelow apart, stays between the two thresholds, and lets go once they come more than
// releaseAbove apart. A fake clock drives adjust; the percentage is the process's own.
func TestFloorEngagesWhenCollectionsComeFast(t *testing.T) {
	base := Current()
	if base < 0 {
		t.Skip("GOGC=off: the floor has nothing to raise")
	}
	const live = 4 << 20
	f := &Floor{floor: 32 << 20, base: base, percent: base}
	defer f.Stop()
	t0 := time.Unix(1000, 0)
	raised := Percent(base, f.floor, live)
	for _, step := range []struct {
		after time.Duration
		want  int
	}{
		{0, base},                        // the first collection: nothing to compare with
		{300 * time.Millisecond, base},   // a calm pace (the stream path's)
		{20 * time.Millisecond, raised},  // fast: the floor applies
		{150 * time.Millisecond, raised}, // between the thresholds: it stays
		{300 * time.Millisecond, base},   // calm again: GOGC as it was
		{10 * time.Millisecond, raised},
	} {
		t0 = t0.Add(step.after)
		f.adjust(t0, live)
		if got := Current(); got != step.want {
			t.Fatalf("after a collection %v after the previous one: percentage %d, want %d", step.after, got, step.want)
		}
	}
	f.Stop()
	if got := Current(); got != base {
		t.Errorf("percentage %d after Stop, want %d back", got, base)
	}
}

// TestFloorFollowsCollections: collections back to back engage the floor through the real cleanup
// hook, and Stop puts the starting percentage back.
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
		t.Errorf("percentage %d after collections back to back, want above %d and at most %d", got, base, maxPercent)
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
