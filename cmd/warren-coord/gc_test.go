package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// gcPercent reads the collector's target without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestServerGC: a serving process runs the collector at 50% unless GOGC says otherwise.
func TestServerGC(t *testing.T) {
	defer debug.SetGCPercent(gcPercent())
	t.Setenv("GOGC", "") // restores GOGC (or its absence) after the test
	os.Unsetenv("GOGC")
	debug.SetGCPercent(100)
	serverGC()
	if got := gcPercent(); got != 50 {
		t.Errorf("without GOGC: collector at %d%%, want 50%%", got)
	}
	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	serverGC()
	if got := gcPercent(); got != 200 {
		t.Errorf("with GOGC=200: collector at %d%%, want 200%% (the operator's setting kept)", got)
	}
}
