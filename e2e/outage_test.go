package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
)

// slowBlob serves size bytes over about d, so that a transfer is still running when the coord dies.
// halfway is closed when the first transfer has sent half of them.
func slowBlob(t *testing.T, size int, d time.Duration) (port uint16, sum [32]byte, halfway <-chan struct{}) {
	t.Helper()
	blob := make([]byte, size)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	sum = sha256.Sum256(blob)
	half := make(chan struct{})
	var once sync.Once
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const chunks = 100
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			fmt.Fprintln(w, "hello")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for i := 0; i < chunks; i++ {
			w.Write(blob[i*size/chunks : (i+1)*size/chunks])
			w.(http.Flusher).Flush()
			if i == chunks/2 {
				once.Do(func() { close(half) })
			}
			time.Sleep(d / chunks) // the pace is the point: a transfer that spans the kill
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port), sum, half
}

func socksGet(t *testing.T, socksAddr, url string) ([]byte, error) {
	d, _ := proxy.SOCKS5("tcp", socksAddr, nil, proxy.Direct)
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// TestCoordOutage drives the binaries through a long coordination-server outage: a transfer running
// when the coord is SIGKILLed completes intact; new connections to known peers keep working for over
// two minutes; a node restarted during the outage comes back from its cached peer map and reaches its
// peer; the loss is logged once, not per retry; when the coord returns, everything resyncs by itself
// and a node that joins afterwards shows up.
func TestCoordOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs for over two minutes")
	}
	t.Parallel() // mostly waiting out the outage: overlaps the loss-and-delay test
	outage := 125 * time.Second
	if s := os.Getenv("WARREN_OUTAGE"); s != "" { // for quicker local runs
		outage, _ = time.ParseDuration(s)
	}
	tmp := t.TempDir()
	coordPort := freeUDPPort(t)
	coordAddr := fmt.Sprintf("127.0.0.1:%d", coordPort)
	coordArgs := []string{"--listen", coordAddr, "--data", filepath.Join(tmp, "coord")}
	coord := startProc(t, "warren-coord", coordArgs...)
	coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	port, sum, halfway := slowBlob(t, 16<<20, 4*time.Second)
	socksA := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	upA := []string{"up", "--coord", coordAddr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0", "--socks", socksA}
	a := startProc(t, "warren", upA...)
	startProc(t, "warren", "up", "--coord", coordAddr, "--coord-key", fp, "--state", stateB, "--name", "bob",
		"--listen", "127.0.0.1:0", "--socks", "", "--expose", fmt.Sprintf("tcp:%d", port))
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "lan", "--state", stateA, "--open")
	warren(t, true, "network", "join", "lan", "--state", stateB)
	waitDirect(t, stateA, "bob")

	url := fmt.Sprintf("http://bob.warren:%d/blob", port)
	done := make(chan error, 1)
	go func() {
		body, err := socksGet(t, socksA, url)
		if err == nil && (len(body) != 16<<20 || sha256.Sum256(body) != sum) {
			err = fmt.Errorf("transfer corrupted: %d bytes", len(body))
		}
		done <- err
	}()
	select {
	case <-halfway: // the coord dies mid-transfer
	case err := <-done:
		t.Fatalf("the transfer ended before it was half done: %v", err)
	}
	coord.kill()
	killed := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("transfer across the coord's SIGKILL: %v", err)
	}
	t.Logf("16 MiB transfer completed intact across the coord's SIGKILL")

	// Restart alice while the coord is down: she comes back from her cache.
	a.stop()
	a = startProc(t, "warren", upA...)
	waitAPI(t, stateA)
	waitDirect(t, stateA, "bob")
	t.Logf("alice restarted during the outage and reached bob %v after the kill", time.Since(killed).Round(time.Second))

	hello := fmt.Sprintf("http://bob.warren:%d/hello", port)
	for n := 1; time.Since(killed) < outage; n++ {
		if body, err := socksGet(t, socksA, hello); err != nil || string(body) != "hello\n" {
			t.Fatalf("new connection %d, %v into the outage: %q %v", n, time.Since(killed).Round(time.Second), body, err)
		}
		time.Sleep(5 * time.Second)
	}
	if n := strings.Count(a.stderr.String(), "coordination server unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times by the restarted node, want once", n)
	}

	// The coord comes back on the same address with the same data: everyone resyncs by itself.
	coord = startProc(t, "warren-coord", coordArgs...)
	coord.line(t, "warren-coord listening on")
	back := time.Now()
	stateC := filepath.Join(tmp, "c")
	startProc(t, "warren", "up", "--coord", coordAddr, "--coord-key", fp, "--state", stateC, "--name", "carol", "--listen", "127.0.0.1:0", "--socks", "")
	waitLoggedIn(t, stateC)
	warren(t, true, "network", "join", "lan", "--state", stateC)
	st := statusOf(t, stateA)
	testkit.Eventually(t, 60*time.Second, func() bool {
		st = statusOf(t, stateA)
		return st.Coord.Connected && hasPeer(st.Peers, "carol", "direct")
	},
		"alice never resynced after the coord came back: %+v", &st)
	t.Logf("after the coord returned, alice reconnected and saw the new node carol in %v", time.Since(back).Round(time.Millisecond))

}
