//go:build pprof

package main

// A profiling build (go build -tags pprof ./cmd/warren), never a release: see package pprofserve.

import "github.com/warren-net/warren/internal/pprofserve"

func init() { pprofserve.Start() }
