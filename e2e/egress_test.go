package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunEgress: inside `warren run`, destinations outside the overlay are reached through the
// node, as the proxy reaches them. The node runs in network namespace A (10.99.0.1), "the internet"
// is namespace B (10.99.0.2, fd99::2) with an HTTP server and a UDP echo; the node's own mount namespace has
// an /etc/hosts that names B (its host resolver), the `warren run` namespaces do not (so only the
// node's DNS can tell them). Checked: curl by address (IPv4 and IPv6) and by name, a UDP echo, the node's own
// address (A's) refused without --allow-local, names resolving into the overlay or to loopback
// dropped, and with --overlay-only none of it.
func TestRunEgress(t *testing.T) {
	const blobSize = 32 << 20
	if testing.Short() {
		t.Skip("runs the binaries in network and user namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	needTool(t, "ip", "unshare", "curl", "bash", "timeout", "getent")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	nsA, nsB := netnsPair(t)
	tmp := t.TempDir()
	// IPv6 on the pair too: fd99::1 (A) and fd99::2 (B).
	for ns, ip := range map[string]string{nsA: "fd99::1/64", nsB: "fd99::2/64"} {
		out, err := nsExec(ns, "ip", "-o", "-4", "addr", "show")
		dev := ""
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[3], "10.99.0.") {
				dev = f[1]
			}
		}
		if err != nil || dev == "" {
			t.Fatalf("the veth in %s: %v\n%s", ns, err, out)
		}
		if out, err := nsExec(ns, "ip", "addr", "add", ip, "dev", dev, "nodad"); err != nil {
			t.Fatalf("ip addr add %s: %v\n%s", ip, err, out)
		}
	}

	// "The internet": an HTTP server and a UDP echo on B's address; a server on A's own address,
	// which the node must not reach for its clients.
	var web, own net.Listener
	var echo net.PacketConn
	inNS(t, nsB, func() {
		var err error
		if web, err = net.Listen("tcp", ":0"); err == nil { // 10.99.0.2 and fd99::2
			echo, err = net.ListenPacket("udp", "10.99.0.2:0")
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	inNS(t, nsA, func() {
		var err error
		if own, err = net.Listen("tcp", "10.99.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	for _, ln := range []net.Listener{web, own} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/blob" {
				w.Write(make([]byte, blobSize))
				return
			}
			fmt.Fprintf(w, "hello %s from %s\n", r.RemoteAddr, r.Host)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	serveUDPEcho(t, echo)
	webPort, ownPort, udpPort := web.Addr().(*net.TCPAddr).Port, own.Addr().(*net.TCPAddr).Port, echo.LocalAddr().(*net.UDPAddr).Port

	coord := startNSProc(t, nsA, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	// The nodes' host resolver knows the "internet" name, a name pointing into the overlay and one
	// pointing at loopback; the namespaces of `warren run` see the real /etc/hosts.
	hosts := filepath.Join(tmp, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.99.0.2 web.egress.test\n100.64.0.1 rebind.egress.test\n127.0.0.1 loop.egress.test\n"), 0o644)
	node := func(name, state string, extra ...string) {
		args := append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", ""}, extra...)
		wrap := []string{"ip", "netns", "exec", nsA, "unshare", "--mount", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts}
		startProcAs(t, wrap, bin(t, "warren"), args...)
		waitLoggedIn(t, state)
	}
	stateA, stateO := filepath.Join(tmp, "alice"), filepath.Join(tmp, "olga")
	node("alice", stateA)
	node("olga", stateO, "--overlay-only")

	run := func(state string, args ...string) (string, int) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", nsA, bin(t, "warren"), "run", "--state", state, "--"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/"}
		start := time.Now()
		out, _ := cmd.CombinedOutput()
		t.Logf("warren run -- %s (%v): exit %d\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), cmd.ProcessState.ExitCode(), out)
		return string(out), cmd.ProcessState.ExitCode()
	}
	webURL := fmt.Sprintf("http://10.99.0.2:%d/", webPort)
	nameURL := fmt.Sprintf("http://web.egress.test:%d/", webPort)
	ownURL := fmt.Sprintf("http://10.99.0.1:%d/", ownPort)
	udp := fmt.Sprintf("exec 3<>/dev/udp/10.99.0.2/%d; echo ping >&3; timeout 5 head -c 10 <&3", udpPort)

	t.Run("egress", func(t *testing.T) {
		if out, code := run(stateA, "curl", "-sS", "-m", "10", "-w", "connect %{time_connect}s, total %{time_total}s\n", webURL); code != 0 || !strings.Contains(out, "from 10.99.0.2") {
			t.Errorf("curl %s: exit %d\n%s", webURL, code, out)
		}
		if out, code := run(stateA, "curl", "-sS", "-m", "10", nameURL); code != 0 || !strings.Contains(out, "from web.egress.test") {
			t.Errorf("curl %s: exit %d\n%s", nameURL, code, out)
		}
		// A bulk download, for the log's timing (bytes, bytes/s).
		out, code := run(stateA, "curl", "-sS", "-m", "60", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}\n", webURL+"blob")
		if code != 0 || !strings.HasPrefix(out, fmt.Sprint(blobSize)+" ") {
			t.Errorf("curl %sblob: exit %d\n%s", webURL, code, out)
		}
		if out, code := run(stateA, "bash", "-c", udp); code != 0 || !strings.Contains(out, "echo:ping") {
			t.Errorf("UDP echo: exit %d\n%s", code, out)
		}
		url6 := fmt.Sprintf("http://[fd99::2]:%d/", webPort)
		if out, code := run(stateA, "curl", "-sS", "-m", "10", url6); code != 0 || !strings.Contains(out, "from [fd99::2]") {
			t.Errorf("curl %s: exit %d\n%s", url6, code, out)
		}
		// The node's own address: refused (reset at once), as the proxy refuses it.
		if out, code := run(stateA, "curl", "-sS", "-m", "10", ownURL); code != 7 {
			t.Errorf("curl %s (the node's host): exit %d, want 7 (connection refused)\n%s", ownURL, code, out)
		}
		// Counted: 4 TCP connections and 1 UDP flow dialed, the host's address refused.
		m := warren(t, true, "metrics", "--state", stateA)
		for _, want := range []string{`warren_node_egress_dials_total{proto="tcp",result="dialed"} 4`,
			`warren_node_egress_dials_total{proto="udp",result="dialed"} 1`, `warren_node_egress_dials_total{proto="tcp",result="refused"} 1`} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s:\n%s", want, m)
			}
		}
	})

	t.Run("names", func(t *testing.T) {
		if out, code := run(stateA, "getent", "ahostsv4", "web.egress.test"); code != 0 || !strings.Contains(out, "10.99.0.2") {
			t.Errorf("getent web.egress.test: exit %d\n%s", code, out)
		}
		// DNS rebinding: answers into the overlay or at loopback are dropped.
		for _, name := range []string{"rebind.egress.test", "loop.egress.test"} {
			if out, code := run(stateA, "getent", "ahostsv4", name); code == 0 {
				t.Errorf("getent %s resolved:\n%s", name, out)
			}
		}
	})

	t.Run("overlay-only", func(t *testing.T) {
		if out, code := run(stateO, "curl", "-sS", "-m", "5", webURL); code == 0 || strings.Contains(out, "hello") {
			t.Errorf("curl %s with --overlay-only: exit %d\n%s", webURL, code, out)
		}
		if out, code := run(stateO, "getent", "ahostsv4", "web.egress.test"); code == 0 {
			t.Errorf("getent web.egress.test with --overlay-only resolved:\n%s", out)
		}
		if out, code := run(stateO, "bash", "-c", udp); code == 0 || strings.Contains(out, "echo:ping") {
			t.Errorf("UDP echo with --overlay-only: exit %d\n%s", code, out)
		}
	})
}
