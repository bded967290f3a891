//go:build pprof

package main

// A profiling build (go build -tags pprof ./cmd/warren), never a release: with WARREN_PPROF set to
// a loopback address the node serves net/http/pprof there (package pprofserve).

import "github.com/warren-net/warren/internal/pprofserve"

func init() { pprofserve.Start() }
