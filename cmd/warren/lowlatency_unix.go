//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// enterLowLatency re-executes warren, same arguments and process ID, with sysmon's deep sleep off
// (lowlatency.go), unless this process already runs that way. It returns only on failure. Call it
// before anything has been read from stdin or started.
func enterLowLatency() error {
	if lowLatencyActive() {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--low-latency: find warren's executable: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, lowLatencyEnviron(os.Environ())); err != nil {
		return fmt.Errorf("--low-latency: re-execute %s: %w", exe, err)
	}
	return nil // not reached
}
