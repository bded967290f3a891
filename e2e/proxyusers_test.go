package e2e

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// probeEnv makes the e2e test binary act as a bare SOCKS5 client (see TestMain): it connects to the
// address in the variable, offers "no authentication" and prints whether the proxy answered.
const probeEnv = "WARREN_E2E_SOCKS_PROBE"

func TestMain(m *testing.M) {
	if addr := os.Getenv(probeEnv); addr != "" {
		fmt.Println(socksProbe(addr))
		os.Exit(0)
	}
	// Every node these tests start (and their children inherit the variable) leaves the host's
	// default gateway alone: tests talk only to loopback and to namespaces they made themselves.
	os.Setenv("WARREN_NO_PORTMAP", "1")
	// The parallel tests here spend their time waiting (a coord outage, a lossy link, a node's idle
	// timeout, a login limit's refill), not computing: run them all at once instead of GOMAXPROCS
	// (two on the CI machine) at a time, unless -parallel says otherwise. Each has its own ports,
	// data directories and namespaces.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", "16")
	}
	os.Exit(m.Run())
}

// socksProbe reports "answered" if a SOCKS5 server at addr answers a greeting, else what happened.
func socksProbe(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return "write: " + err.Error()
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return "closed: " + err.Error()
	}
	return fmt.Sprintf("answered %d %d", b[0], b[1])
}

// testBinaryAsNobody runs this test binary as nobody with env and returns its output.
func testBinaryAsNobody(t *testing.T, env string) string {
	t.Helper()
	out, err := testkit.SelfAsNobody(t, env).CombinedOutput()
	if err != nil {
		t.Fatalf("client as nobody: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestProxyServesItsOwnUser: another local user cannot use the node's proxy (and with it the node's
// key and rule grants) on 127.0.0.1; the node's own user can, also on the unix socket in the state
// directory, and --proxy-users lets more users in.
func TestProxyServesItsOwnUser(t *testing.T) {
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")

	start := func(name string, extra ...string) (socks string, state string) {
		state = filepath.Join(tmp, name)
		port := freePort(t)
		socks = fmt.Sprintf("127.0.0.1:%d", port)
		startProc(t, "warren", append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", socks}, extra...)...)
		waitLoggedIn(t, state)
		return socks, state
	}
	socks, state := start("private")
	if got := socksProbe(socks); !strings.HasPrefix(got, "answered 5 0") {
		t.Fatalf("the node's own user: %s", got)
	}
	if got := testBinaryAsNobody(t, probeEnv+"="+socks); !strings.HasPrefix(got, "closed") {
		t.Errorf("another local user got: %s", got)
	}

	// The unix socket serves the same proxy: plain HTTP forwarding through it reaches the proxy.
	sock := filepath.Join(state, "proxy.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("proxy socket: %v %v", fi, err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(mustURL(t, "http://proxy.sock")),
		Dial:  func(string, string) (net.Conn, error) { return net.Dial("unix", sock) },
	}}
	resp, err := client.Get("http://127.0.0.1:1/")
	if err != nil {
		t.Fatalf("through the unix socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("through the unix socket: status %d, want 403 (this host is not allowed without --allow-local)", resp.StatusCode)
	}

	shared, _ := start("shared", "--proxy-users", "65534")
	if got := testBinaryAsNobody(t, probeEnv+"="+shared); !strings.HasPrefix(got, "answered 5 0") {
		t.Errorf("a user named in --proxy-users got: %s", got)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
