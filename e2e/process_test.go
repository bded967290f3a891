package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node/localapi"
)

// binaries builds warren and warren-coord once per test run.
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "warren-bin")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/warren-net/warren/cmd/warren", "github.com/warren-net/warren/cmd/warren-coord")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, nil
})

func bin(t *testing.T, name string) string {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// proc is a started binary whose output goes to the test log.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string // stdout lines
	done   chan struct{}
	stderr *syncBuffer // everything it logged
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(bin(t, name), args...))
}

// startCmd starts cmd, a process named name in the log, and stops it when the test ends.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	stdout, _ := cmd.StdoutPipe()
	stderr := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(testkit.Writer(t), stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100), done: make(chan struct{}), stderr: stderr}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Logf("%s stdout: %s", name, sc.Text())
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// kill ends the process with SIGKILL, as a crash would.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// line waits for a stdout line with the given prefix.
func (p *proc) line(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.HasPrefix(l, prefix) {
				return strings.TrimSpace(strings.TrimPrefix(l, prefix))
			}
		case <-p.done:
			t.Fatalf("process exited before printing %q", prefix)
		case <-timeout:
			t.Fatalf("no %q line", prefix)
		}
	}
}

// warren runs one CLI command and returns its output; it fails the test if the exit status is not wantOK.
func warren(t *testing.T, wantOK bool, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin(t, "warren"), args...).CombinedOutput()
	if (err == nil) != wantOK {
		t.Fatalf("warren %s: err=%v, want ok=%v\n%s", strings.Join(args, " "), err, wantOK, out)
	}
	return string(out)
}

// freePort returns a free TCP port on 127.0.0.1 (unusedPort).
func freePort(t *testing.T) int { return unusedPort(t) }

// TestBinaries drives warren-coord and two warren nodes the way the README does.
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	httpPort, _ := blobServer(t, 1<<20)
	socksPort := freePort(t)
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	// Flags after the positional-free command, in any order. Alice runs in low-latency mode: it
	// re-executes itself (same process) with the runtime setting, and everything below goes through it.
	alice := startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0",
		"--socks", fmt.Sprintf("127.0.0.1:%d", socksPort), "--low-latency")
	startProc(t, "warren", "up", "--state", stateB, "--name", "bob", "--coord", addr, "--listen", "127.0.0.1:0", "--socks", "",
		"--expose", fmt.Sprintf("tcp:%d", httpPort))
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	if !strings.Contains(alice.stderr.String(), "low latency: the Go runtime's monitor thread stays awake") {
		t.Errorf("alice (--low-latency) did not log low-latency mode:\n%s", alice.stderr.String())
	}
	if environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", alice.cmd.Process.Pid)); err == nil { // Linux
		if !bytes.Contains(environ, []byte("GODEBUG=schedtrace=2147483647")) {
			t.Errorf("alice's process (pid %d) runs without the low-latency GODEBUG", alice.cmd.Process.Pid)
		}
	}

	warren(t, true, "network", "create", "demo", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "--state", stateB, "join", "--password", "pw", "demo")
	out := warren(t, false, "network", "join", "nope", "--state", stateB)
	if !strings.Contains(out, "does not exist") {
		t.Errorf("join unknown network said: %s", out)
	}

	// status --json has the documented shape and eventually shows a direct path.
	var st localapi.Status
	testkit.Eventually(t, 60*time.Second, func() bool {
		st = localapi.Status{}
		if err := json.Unmarshal([]byte(warren(t, true, "status", "--json", "--state", stateA)), &st); err != nil {
			t.Fatal(err)
		}
		return len(st.Peers) == 1 && st.Peers[0].Path == "direct"
	}, "bob never direct: %+v", &st)
	if st.Self.Name != "alice" || len(st.Self.IPs) != 2 || st.Peers[0].Name != "bob" || !st.Peers[0].Online {
		t.Errorf("status: %+v", st)
	}
	table := warren(t, true, "status", "--state", stateA)
	if !strings.Contains(table, "bob") || !strings.Contains(table, "direct") {
		t.Errorf("status table:\n%s", table)
	}

	d, _ := proxy.SOCKS5("tcp", fmt.Sprintf("127.0.0.1:%d", socksPort), nil, proxy.Direct)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}}
	body, _ := fetch(t, client, fmt.Sprintf("http://bob.warren:%d/hello", httpPort))
	if string(body) != "hello from b\n" {
		t.Errorf("fetch: %q", body)
	}

	// ping(8)-style ICMP echo through both netstacks.
	out = warren(t, true, "ping", "bob", "-c", "3", "-i", "50ms", "--state", stateA)
	if !strings.Contains(out, "icmp_seq=3") || !strings.Contains(out, "path=direct") || !strings.Contains(out, " 0% loss") {
		t.Errorf("ping:\n%s", out)
	}
	out = warren(t, false, "ping", "nobody", "-c", "1", "--state", stateA)
	if !strings.Contains(out, "100% loss") {
		t.Errorf("ping to an unknown peer:\n%s", out)
	}

	// A node that pins another key is refused with a clear error.
	out = warren(t, false, "up", "--coord", addr, "--coord-key", "SHA256:"+strings.Repeat("A", 43), "--state", filepath.Join(tmp, "c"), "--name", "carol", "--socks", "", "--listen", "127.0.0.1:0")
	if !strings.Contains(out, "does not match the pinned key") {
		t.Errorf("key mismatch said: %s", out)
	}
	// A node that runs a command is in low-latency mode unless told otherwise; the command runs
	// without the runtime setting (a Go program there behaves as without warren).
	out = warren(t, true, "up", "--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, "e"), "--name", "erin", "--socks", "",
		"--listen", "127.0.0.1:0", "--", "sh", "-c", `echo "command GODEBUG=[$GODEBUG]"`)
	if !strings.Contains(out, "command GODEBUG=[]") || !strings.Contains(out, "low latency:") {
		t.Errorf("warren up -- COMMAND: want low-latency mode and the command without its GODEBUG:\n%s", out)
	}
	out = warren(t, true, "up", "--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, "e"), "--name", "erin", "--socks", "",
		"--listen", "127.0.0.1:0", "--low-latency=false", "--", "true")
	if strings.Contains(out, "low latency:") {
		t.Errorf("warren up --low-latency=false -- COMMAND ran in low-latency mode:\n%s", out)
	}
	// An unreachable coord gives up after the bounded retry with a message.
	start := time.Now()
	out = warren(t, false, "up", "--coord", "127.0.0.1:1", "--state", filepath.Join(tmp, "d"), "--name", "dave", "--socks", "", "--listen", "127.0.0.1:0", "--coord-timeout", "2s")
	if !strings.Contains(out, "cannot reach the coordination server") || time.Since(start) > 15*time.Second {
		t.Errorf("unreachable coord (%v): %s", time.Since(start), out)
	}
	// The CLI without a node says so.
	out = warren(t, false, "status", "--state", filepath.Join(tmp, "nobody"))
	if !strings.Contains(out, "no node is running") {
		t.Errorf("status without node: %s", out)
	}
}

func waitAPI(t *testing.T, state string) {
	t.Helper()
	c := localapi.NewClient(state)
	var err error
	testkit.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = c.Status(ctx)
		return err == nil
	}, "node with state %s never answered: %v", state, later(func() any { return err }))
}

// freeUDPPort returns a free UDP port on 127.0.0.1 (unusedPort), whose TCP twin is free too.
func freeUDPPort(t *testing.T) int { return unusedPort(t) }

// unusedPort returns a port that is free on 127.0.0.1 for both UDP and TCP, chosen at random below
// the kernel's ephemeral range (ip_local_port_range). The kernel never hands such a port to a socket
// bound to port 0 or connecting unbound, so it stays free after this returns, however long it takes
// a process to bind it, and while one restarts on it (TestCoordOutage's coord is away two minutes);
// a port from the range could be taken by any socket of a test running meanwhile. No port is
// handed out twice in one test binary, so parallel tests never pick the same one.
func unusedPort(t *testing.T) int {
	t.Helper()
	low := 32768 // Linux's default start of the range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	from := max(1024, low/2)
	if low-from < 1000 {
		t.Fatalf("the ephemeral port range starts at %d: no room below it for a port of our own", low)
	}
	for range 100 {
		port := from + rand.IntN(low-from)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("no free port in %d-%d", from, low-1)
	return 0
}

// handedOut holds every port unusedPort returned or tried.
var handedOut sync.Map

func statusOf(t *testing.T, state string) localapi.Status {
	t.Helper()
	var st localapi.Status
	if err := json.Unmarshal([]byte(warren(t, true, "status", "--json", "--state", state)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func hasPeer(peers []localapi.Peer, name, path string) bool {
	for _, p := range peers {
		if p.Name == name && p.Path == path {
			return true
		}
	}
	return false
}

// waitDirect waits until the node with state dir sees peer over a direct path.
func waitDirect(t *testing.T, state, peer string) {
	t.Helper()
	var st localapi.Status
	testkit.Eventually(t, 60*time.Second, func() bool { st = statusOf(t, state); return hasPeer(st.Peers, peer, "direct") },
		"%s never direct: %+v", peer, &st)
}
