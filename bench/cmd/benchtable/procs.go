package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux
// architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo to ask).
const clockTicks = 100

// proc is one child process of the benchmark. It runs in its own process group, so stop can end it
// together with anything it started; its stderr goes to a log file in the run's temp dir.
type proc struct {
	name  string
	cmd   *exec.Cmd
	lines chan string   // stdout, one line at a time; closed at EOF
	done  chan struct{} // closed when the process has exited
	log   string        // path of the stderr log
}

// startProc starts bin with args and env (added to the driver's own environment).
func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnviron(), env...)
	cmd.Stderr = logf
	// Own process group (so one signal reaches everything it spawned) and killed if we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, lines: make(chan string, 64), done: make(chan struct{}), log: logPath}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads later lines; drop rather than block the child
			}
		}
		close(p.lines)
		cmd.Wait() // only after stdout reached EOF, as os/exec requires
		close(p.done)
	}()
	return p, nil
}

// pid is the child's process ID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// line waits up to timeout for the next stdout line.
func (p *proc) line(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s exited before printing (log: %s)%s", p.name, p.log, p.tail())
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("%s printed nothing in %v (log: %s)%s", p.name, timeout, p.log, p.tail())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return ":\n  " + strings.Join(lines, "\n  ")
}

// stop sends SIGTERM to the process group, and SIGKILL if it has not exited within grace.
func (p *proc) stop(grace time.Duration) {
	pgid := -p.pid()
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything left in the group (a grandchild that ignored SIGTERM) goes too.
	syscall.Kill(pgid, syscall.SIGKILL)
}

// cpuSeconds returns the user+system CPU time the process has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time: /proc/%d/stat: %w", pid, err)
	}
	return float64(ut+st) / clockTicks, nil
}

// rssMiB returns the process's resident set size (VmRSS) in MiB.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("rss: /proc/%d/status: %w", pid, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("rss: no VmRSS in /proc/%d/status", pid)
}

// origGodebug holds benchtable's own GODEBUG as it was started, while awakeSelf has changed it.
const origGodebug = "BENCHTABLE_ORIG_GODEBUG"

// awakeSelf re-executes benchtable with godebugAwake in its environment (-apps-awake) unless it
// runs that way already. The runtime reads the setting only at start.
func awakeSelf() error {
	if _, ok := os.LookupEnv(origGodebug); ok {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("-apps-awake: %w", err)
	}
	env := append(os.Environ(), origGodebug+"="+os.Getenv("GODEBUG"), godebugAwake)
	return fmt.Errorf("-apps-awake: re-execute %s: %w", exe, syscall.Exec(exe, os.Args, env))
}

// childEnviron is the environment children start from: benchtable's own as it was started (the
// VPN processes get godebugAwake only in their low-latency variants).
func childEnviron() []string {
	orig, awake := os.LookupEnv(origGodebug)
	env := os.Environ()
	if !awake {
		return env
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, origGodebug+"=") {
			out = append(out, kv)
		}
	}
	if orig != "" {
		out = append(out, "GODEBUG="+orig)
	}
	return out
}
