package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestUpCommandDiesWithWarren: the command 'warren up -- CMD' starts gets SIGTERM when warren is
// killed outright. The test binary plays warren: it starts sleep as runUntilDone does, prints its pid
// and waits to be SIGKILLed.
func TestUpCommandDiesWithWarren(t *testing.T) {
	if os.Getenv("WARREN_TEST_PDEATH_PARENT") == "1" {
		cmd := exec.Command("sleep", "600")
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			fmt.Println("start:", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		cmd.Wait() // until killed
		os.Exit(1)
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestUpCommandDiesWithWarren$")
	parent.Env = append(os.Environ(), "WARREN_TEST_PDEATH_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		parent.Process.Kill()
		parent.Wait()
		t.Fatalf("parent said %q (%v)", line, err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !running(pid) {
		t.Fatalf("child %d is not running before its parent dies", pid)
	}
	parent.Process.Kill()
	parent.Wait()
	// The orphan is reparented and reaped (or left a zombie where pid 1 does not reap); either way it
	// stops running. Poll for that state, with a generous deadline as a safety net.
	testkit.Eventually(t, 20*time.Second, func() bool { return !running(pid) }, "child %d still runs after its parent was killed", pid)
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may hold spaces, so read after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// TestExitStatusSignal: a command killed by signal N makes warren exit with 128+N, as a shell does;
// an exit code passes through, and success is nil.
func TestExitStatusSignal(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"kill -KILL $$", 128 + int(syscall.SIGKILL)},
		{"exit 3", 3},
		{"exit 0", 0},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		werr := cmd.Run()
		err := exitStatus("sh", cmd.ProcessState, werr)
		var code exitCode
		switch {
		case tc.want == 0 && err != nil:
			t.Errorf("%q: got %v, want nil", tc.script, err)
		case tc.want != 0 && (!errors.As(err, &code) || int(code) != tc.want):
			t.Errorf("%q: got %v, want exit status %d", tc.script, err, tc.want)
		}
	}
}
