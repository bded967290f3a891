//go:build pprof

package main

// A profiling build (go build -tags pprof ./cmd/warren), never a release: with WARREN_PPROF set
// to a loopback address, the process serves net/http/pprof there and logs the address it got on
// stderr ("pprof listening on ADDR"). BENCHMARKS.md shows how the bench's profiles were taken.

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("WARREN_PPROF")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pprof:", err)
		return
	}
	if !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		ln.Close()
		fmt.Fprintln(os.Stderr, "pprof: loopback addresses only:", addr)
		return
	}
	fmt.Fprintln(os.Stderr, "pprof listening on", ln.Addr())
	go http.Serve(ln, nil)
}
