//go:build !unix

package main

import "errors"

// enterLowLatency: the mode needs exec(2), which this OS lacks; setting
// GODEBUG=schedtrace=2147483647 in warren's environment does the same.
func enterLowLatency() error {
	if lowLatencyActive() {
		return nil
	}
	return errors.New("--low-latency needs re-executing warren, which this OS cannot do in place: set GODEBUG=schedtrace=2147483647 in its environment instead")
}
