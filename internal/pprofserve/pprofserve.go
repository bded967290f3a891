// Package pprofserve serves net/http/pprof for profiling builds (go build -tags pprof), never a
// release: the binaries import it only from a file with that build tag. With WARREN_PPROF set to a
// loopback address, Start serves the profiles there and logs the address it got on stderr
// ("pprof listening on ADDR"). WARREN_MEMPROFILERATE sets runtime.MemProfileRate (1 records every
// allocation: exact per-connection heap figures for small objects that the default 512 KiB sampling
// misses). BENCHMARKS.md shows how the profiles were taken.
package pprofserve

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
	"runtime"
	"strconv"
)

// Start serves the profiles on $WARREN_PPROF if it is set and a loopback address. The server runs
// for the rest of the process's life (it is a debugging aid: nothing stops it).
func Start() {
	if v := os.Getenv("WARREN_MEMPROFILERATE"); v != "" {
		if rate, err := strconv.Atoi(v); err == nil && rate > 0 {
			runtime.MemProfileRate = rate
		} else {
			fmt.Fprintln(os.Stderr, "pprof: WARREN_MEMPROFILERATE wants a positive integer:", v)
		}
	}
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
