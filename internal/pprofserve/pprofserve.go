// Package pprofserve serves net/http/pprof for profiling builds (go build -tags pprof), never a
// release: the binaries import it only from a file with that build tag. With WARREN_PPROF set to a
// loopback address, Start serves the profiles there and logs the address it got on stderr
// ("pprof listening on ADDR"). BENCHMARKS.md shows how the profiles were taken.
package pprofserve

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// Start serves the profiles on $WARREN_PPROF if it is set and a loopback address. The server runs
// for the rest of the process's life (it is a debugging aid: nothing stops it).
func Start() {
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
