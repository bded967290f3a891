package e2e

// Helpers for tests that run in network namespaces (TestTUN, the NAT lab): commands, processes and
// sockets inside a namespace.

import (
	"bufio"
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// nsExec runs a command inside namespace ns.
func nsExec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// inNS runs f on a thread switched into namespace ns: sockets f creates live there for good.
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	if err := enterNS(ns, f); err != nil {
		t.Fatal(err)
	}
}

// startNSProc is startProc inside namespace ns (`ip netns exec` execs the binary: same pid).
func startNSProc(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin(t, name)}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	stderr := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(nsWriter{t, ns}, stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100), done: make(chan struct{}), stderr: stderr}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Logf("[%s] %s stdout: %s", ns, name, sc.Text())
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

// nsWriter sends a process's log to t.Log, each line marked with the namespace it runs in.
type nsWriter struct {
	t  testing.TB
	ns string
}

func (w nsWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("[%s] %s", w.ns, l)
	}
	return len(p), nil
}

// udpListen opens a UDP socket inside ns, optionally allowed to send broadcasts.
func udpListen(t *testing.T, ns, addr string, broadcast bool) net.PacketConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		if !broadcast {
			return nil
		}
		var serr error
		rc.Control(func(fd uintptr) { serr = setsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1) })
		return serr
	}}
	var pc net.PacketConn
	var err error
	inNS(t, ns, func() { pc, err = lc.ListenPacket(context.Background(), "udp4", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}
