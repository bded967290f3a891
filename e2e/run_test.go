package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// nobody is the unprivileged user the rootless side of TestRun runs as.
var asNobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}

// TestRun: `warren run -- APP` as an ordinary user (nobody) reaches a peer's exposed services from a
// namespace of its own, with no proxy settings: HTTP over IPv4 and IPv6 with curl, a UDP echo, ICMP
// echo; several at once on one node; the command's exit status and death by signal come back.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries in user namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the client as another user (setpriv) and may chmod /dev/net/tun")
	}
	needTool(t, "setpriv", "curl", "bash", "timeout")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	if _, err := exec.LookPath("unshare"); err == nil {
		if out, err := nobodyCmd("unshare", "--user", "--net", "true").CombinedOutput(); err != nil {
			t.Skipf("unprivileged user namespaces are not available here: %v %s", err, out)
		}
	}
	if fi, err := os.Stat("/dev/net/tun"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		// The usual mode on most distributions; restored afterwards.
		if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod("/dev/net/tun", fi.Mode().Perm()) })
	}

	// The state dir of nobody's node must be nobody's, where nobody can reach it (not under the
	// test's 0700 temp dir).
	top, err := os.MkdirTemp("", "warren-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o711)
	stateA, stateB := filepath.Join(top, "alice"), filepath.Join(top, "bob")
	if err := os.Mkdir(stateA, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(stateA, 65534, 65534)
	// The test's binaries live in a directory only root may enter; nobody gets a copy.
	warrenBin := filepath.Join(top, "warren")
	if b, err := os.ReadFile(bin(t, "warren")); err != nil || os.WriteFile(warrenBin, b, 0o755) != nil {
		t.Fatal("copying the warren binary:", err)
	}

	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(top, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	// bob (root, proxy mode) exposes an HTTP server and a UDP echo on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from bob\n", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveUDPEcho(t, uc)
	httpPort, udpPort := ln.Addr().(*net.TCPAddr).Port, uc.LocalAddr().(*net.UDPAddr).Port

	startProc(t, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateB, "--name", "bob", "--listen", "127.0.0.1:0",
		"--socks", "", "--expose", fmt.Sprintf("tcp:%d,udp:%d", httpPort, udpPort))
	startProcAs(t, asNobody, warrenBin, "up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "127.0.0.1:0",
		"--socks", "")
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "runnet", "--state", stateB, "--password", "pw")
	warren(t, true, "network", "join", "runnet", "--state", stateA, "--password", "pw")
	waitDirect(t, stateA, "bob")
	ipB := ipStrings(statusOf(t, stateB).Self.IPs)

	// run starts `warren run` as nobody with a bare environment (no proxy variables).
	run := func(args ...string) (string, int) {
		cmd := nobodyCmd(append([]string{warrenBin, "run", "--state", stateA, "--"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/"}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("warren run -- %s (%v): %v\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, out)
		return string(out), cmd.ProcessState.ExitCode()
	}

	t.Run("curl", func(t *testing.T) {
		for _, ip := range ipB {
			url := "http://" + net.JoinHostPort(ip, fmt.Sprint(httpPort)) + "/"
			out, code := run("curl", "-sS", "-m", "10", url)
			// The service sees the connection from the node's stack (the stream path dials loopback);
			// what matters is that it came through.
			if code != 0 || !strings.Contains(out, "from bob") {
				t.Errorf("curl %s: exit %d\n%s", url, code, out)
			}
		}
		// Each connection ended in the device's stack and rode a stream to bob.
		f, _ := scrapeNode(t, stateA)
		if v := sample(f, "warren_node_tun_streams_total", "result", "dialed"); v != float64(len(ipB)) {
			t.Errorf("alice's device stacks dialed %v streams for %d connections", v, len(ipB))
		}
	})

	t.Run("names", func(t *testing.T) {
		// The namespace's resolv.conf points at the node's DNS address: NAME.warren resolves with the
		// system's own resolver (getent, curl), and so do reverse lookups of overlay addresses.
		out, code := run("getent", "ahostsv4", "bob.warren")
		if code != 0 || !strings.Contains(out, ipB[0]) {
			t.Errorf("getent ahostsv4 bob.warren: exit %d\n%s", code, out)
		}
		out, code = run("getent", "ahostsv4", "bob") // the search domain
		if code != 0 || !strings.Contains(out, ipB[0]) {
			t.Errorf("getent ahostsv4 bob: exit %d\n%s", code, out)
		}
		out, code = run("getent", "hosts", ipB[0])
		if code != 0 || !strings.Contains(out, "bob.warren") {
			t.Errorf("getent hosts %s: exit %d\n%s", ipB[0], code, out)
		}
		url := fmt.Sprintf("http://bob.warren:%d/", httpPort)
		out, code = run("curl", "-sS", "-m", "10", url)
		if code != 0 || !strings.Contains(out, "from bob") {
			t.Errorf("curl %s: exit %d\n%s", url, code, out)
		}
		out, code = run("getent", "hosts", "nobody-here.warren")
		if code == 0 {
			t.Errorf("an unknown name resolved:\n%s", out)
		}
		if out, _ := run("cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 100.127.255.254") {
			t.Errorf("resolv.conf inside:\n%s", out)
		}
	})

	t.Run("udp", func(t *testing.T) {
		out, code := run("bash", "-c", fmt.Sprintf("exec 3<>/dev/udp/%s/%d; echo ping >&3; timeout 5 head -c 10 <&3", ipB[0], udpPort))
		if code != 0 || !strings.Contains(out, "echo:ping") {
			t.Errorf("UDP echo: exit %d\n%s", code, out)
		}
	})

	t.Run("ping", func(t *testing.T) {
		if _, err := exec.LookPath("ping"); err == nil {
			out, code := run("ping", "-c", "3", "-i", "0.2", "-W", "5", ipB[0])
			if code != 0 || !strings.Contains(out, " 0% packet loss") {
				t.Errorf("ping: exit %d\n%s", code, out)
			}
			return
		}
		needTool(t, "python3") // no ping here: an ICMP datagram socket is what an unprivileged ping uses
		out, code := run("python3", "-c", `import socket,sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
s.settimeout(5)
s.sendto(b"\x08\x00\x00\x00\x00\x00\x00\x01warren", (sys.argv[1], 0))
d, a = s.recvfrom(100)
print("reply from", a[0], d[0])`, ipB[0])
		if code != 0 || !strings.Contains(out, "reply from "+ipB[0]+" 0") {
			t.Errorf("ICMP echo: exit %d\n%s", code, out)
		}
	})

	t.Run("inside", func(t *testing.T) {
		out, code := run("cat", "/proc/net/dev", "/proc/self/status")
		var ifaces []string
		for _, l := range strings.Split(out, "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && strings.Contains(l, "|") == false && !strings.Contains(name, " ") && !strings.Contains(l, "\t") {
				ifaces = append(ifaces, name)
			}
		}
		if code != 0 || strings.Join(ifaces, ",") != "lo,warren0" && strings.Join(ifaces, ",") != "warren0,lo" {
			t.Errorf("want only lo and warren0 in the namespace, got %v (exit %d)\n%s", ifaces, code, out)
		}
		if !strings.Contains(out, "CapEff:\t0000000000000000") {
			t.Errorf("the command has capabilities:\n%s", out)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		url := "http://" + net.JoinHostPort(ipB[0], fmt.Sprint(httpPort)) + "/"
		var wg sync.WaitGroup
		outs := make([]string, 3)
		codes := make([]int, 3)
		for i := range outs {
			wg.Go(func() {
				outs[i], codes[i] = run("sh", "-c", "for i in 1 2 3 4 5; do curl -sS -m 10 "+url+" || exit 1; done")
			})
		}
		wg.Wait()
		for i := range outs {
			if codes[i] != 0 || strings.Count(outs[i], "from bob") != 5 {
				t.Errorf("run %d: exit %d\n%s", i, codes[i], outs[i])
			}
		}
	})

	t.Run("other-user", func(t *testing.T) {
		// Even with the socket opened up, another user may not attach a device (SO_PEERCRED).
		sock := filepath.Join(stateA, "warren.sock")
		os.Chmod(stateA, 0o711)
		os.Chmod(sock, 0o666)
		defer os.Chmod(stateA, 0o700)
		defer os.Chmod(sock, 0o600)
		cmd := exec.Command("setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", warrenBin, "run", "--state", stateA, "--", "true")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "uid 65533 may not attach") {
			t.Errorf("uid 65533 attaching to nobody's node: %v\n%s", err, out)
		}
	})

	t.Run("exit", func(t *testing.T) {
		if _, code := run("sh", "-c", "exit 7"); code != 7 {
			t.Errorf("exit 7: got %d", code)
		}
		if _, code := run("sh", "-c", "kill -KILL $$"); code != 128+9 {
			t.Errorf("killed by SIGKILL: got %d, want 137", code)
		}
		if out, code := run("no-such-command-here"); code == 0 || !strings.Contains(out, "no-such-command-here") {
			t.Errorf("missing command: exit %d\n%s", code, out)
		}
	})
}

func nobodyCmd(args ...string) *exec.Cmd {
	return exec.Command(asNobody[0], append(asNobody[1:len(asNobody):len(asNobody)], args...)...)
}

// startProcAs is startProc for a binary (a path) run through a wrapper (setpriv).
func startProcAs(t *testing.T, wrapper []string, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(wrapper[0], append(append(wrapper[1:len(wrapper):len(wrapper)], name), args...)...))
}
