package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/warren-net/warren/bench/internal/load"
)

// profile records both VPN processes of a row with Linux perf during one bulk run of -profile-streams
// and writes, into dir, ROW.perf.data (for `perf report -i`) and ROW.txt (where the CPU time
// went: by binary and kernel, by function including callees, by function alone). The warren
// binaries take no -cpuprofile flag, and perf sees the real processes as they run, Go runtime and
// kernel included.
func (b *bench) profile(ctx context.Context, dir, name string, t target) (string, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "", fmt.Errorf("profile needs Linux perf (apt-get install linux-perf): %w", err)
	}
	if len(t.vpn) == 0 {
		return "", errors.New("profile: nothing to profile in this row")
	}
	pids := make([]string, len(t.vpn))
	for i, p := range t.vpn {
		pids[i] = strconv.Itoa(p.pid())
	}
	data := filepath.Join(dir, name+".perf.data")
	var rec *exec.Cmd
	var recOut strings.Builder
	window := func(phase string) {
		switch phase {
		case "start":
			rec = exec.CommandContext(ctx, perf, "record", "-F", "999", "-g", "-o", data, "-p", strings.Join(pids, ","),
				"--", "sleep", fmt.Sprintf("%.1f", b.opts.dur.Seconds()))
			rec.Stdout, rec.Stderr = &recOut, &recOut
			if err := rec.Start(); err != nil {
				rec = nil
				recOut.WriteString(err.Error())
			}
		}
	}
	if _, err := load.Bulk(ctx, t.dial, b.opts.profileN, b.opts.upload, b.opts.warmup, b.opts.dur+time.Second, window); err != nil {
		if rec != nil {
			rec.Wait()
		}
		return "", fmt.Errorf("profile %s: %w", name, err)
	}
	if rec == nil {
		return "", fmt.Errorf("profile %s: perf record did not start: %s", name, recOut.String())
	}
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("profile %s: perf record: %w: %s", name, err, recOut.String())
	}
	// Three views: where the time went by binary and kernel; the functions that account for most
	// of it including what they call (from the stacks, so the Go callers of syscalls show); and the
	// functions by their own time.
	var rep []byte
	for _, args := range [][]string{
		{"--no-children", "--sort", "comm,dso", "--percent-limit", "1"},
		{"--children", "--sort", "comm,sym", "--percent-limit", "5"},
		{"--no-children", "--sort", "comm,sym", "--percent-limit", "0.5"},
	} {
		out, err := exec.CommandContext(ctx, perf, append([]string{"report", "-i", data, "--stdio", "-g", "none"}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("profile %s: perf report: %w", name, err)
		}
		rep = append(rep, out...)
	}
	txt := filepath.Join(dir, name+".txt")
	if err := os.WriteFile(txt, rep, 0o644); err != nil {
		return "", fmt.Errorf("profile %s: %w", name, err)
	}
	return txt, nil
}
