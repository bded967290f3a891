// Command demo is what `make demo` runs: a coordination server and two nodes on loopback, built from
// this tree, where node alice fetches a page from node bob's localhost-only web server through her
// SOCKS5 proxy. It prints each step as the command a user would type, and cleans up after itself.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin   string
	dir   string
	procs []*exec.Cmd
}

func run() error {
	bin, err := filepath.Abs("bin")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "warren-demo")
	if err != nil {
		return err
	}
	d := &demo{bin: bin, dir: dir}
	defer d.cleanup()

	step("bob runs a web server that listens on his localhost only")
	page := "Hello from bob's laptop! This page never left 127.0.0.1 on bob's side.\n"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	webPort := ln.Addr().(*net.TCPAddr).Port
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, page) }))
	fmt.Printf("  serving on 127.0.0.1:%d\n", webPort)

	step("start the coordination server")
	coordOut, err := d.start("coord", "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "coord"))
	if err != nil {
		return err
	}
	addr := strings.TrimPrefix(<-coordOut, "warren-coord listening on ")
	key := strings.TrimPrefix(<-coordOut, "key ")
	fmt.Printf("  listening on %s, key %s\n", addr, key)

	socks := freePort()
	alice, bob := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	step("alice and bob bring their nodes up (no root), pinning the server's key")
	if _, err := d.start("alice", "warren", "up", "--coord", addr, "--coord-key", key, "--name", "alice", "--state", alice, "--listen", "127.0.0.1:0",
		"--socks", fmt.Sprintf("127.0.0.1:%d", socks)); err != nil {
		return err
	}
	if _, err := d.start("bob", "warren", "up", "--coord", addr, "--coord-key", key, "--name", "bob", "--state", bob, "--listen", "127.0.0.1:0",
		"--socks", "", "--expose", fmt.Sprintf("tcp:%d", webPort)); err != nil {
		return err
	}
	if err := d.waitStatus(alice, nil); err != nil {
		return err
	}
	if err := d.waitStatus(bob, nil); err != nil {
		return err
	}

	step("alice creates a network, bob joins it")
	if err := d.cli("network", "create", "demo", "--password", "open-sesame", "--state", alice); err != nil {
		return err
	}
	if err := d.cli("network", "join", "demo", "--password", "open-sesame", "--state", bob); err != nil {
		return err
	}
	if err := d.waitStatus(alice, func(st statusJSON) bool { return len(st.Peers) == 1 && st.Peers[0].Path == "direct" }); err != nil {
		return err
	}
	step("alice's view of the network")
	if err := d.cli("status", "--state", alice); err != nil {
		return err
	}

	url := fmt.Sprintf("http://bob.warren:%d/", webPort)
	step(fmt.Sprintf("alice fetches %s through her SOCKS5 proxy", url))
	fmt.Printf("  (same as: curl --socks5-hostname 127.0.0.1:%d %s)\n", socks, url)
	dialer, err := proxy.SOCKS5("tcp", fmt.Sprintf("127.0.0.1:%d", socks), nil, proxy.Direct)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer.(proxy.ContextDialer).DialContext}}
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("fetch through SOCKS: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Printf("  HTTP %d in %v:\n  | %s", resp.StatusCode, time.Since(start).Round(time.Millisecond), body)
	if string(body) != page {
		return errors.New("the page did not arrive intact")
	}
	fmt.Println("\nDemo OK: alice reached bob's localhost-only service by name, over an end-to-end encrypted")
	fmt.Println("QUIC link, with no root and no kernel driver on either side.")
	return nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

// start launches a binary; its stdout lines arrive on the returned channel, stderr goes to a log file.
func (d *demo) start(name, binary string, args ...string) (<-chan string, error) {
	fmt.Printf("$ %s %s &\n", binary, shellJoin(args))
	logf, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(d.bin, binary), args...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (did 'make build' run?)", binary, err)
	}
	d.procs = append(d.procs, cmd)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, nil
}

func (d *demo) cli(args ...string) error {
	fmt.Printf("$ warren %s\n", shellJoin(args))
	cmd := exec.Command(filepath.Join(d.bin, "warren"), args...)
	stdout, stderr := &indent{w: os.Stdout}, &indent{w: os.Stderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	stdout.end()
	stderr.end()
	return err
}

type statusJSON struct {
	Peers []struct {
		Name string `json:"name"`
		Path string `json:"path"`
	} `json:"peers"`
}

// waitStatus polls `warren status --json` until ok (nil = any answer) or 20 s pass.
func (d *demo) waitStatus(state string, ok func(statusJSON) bool) error {
	deadline := time.Now().Add(20 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		out, err := exec.Command(filepath.Join(d.bin, "warren"), "status", "--json", "--state", state).Output()
		last = out
		var st statusJSON
		if err == nil && json.Unmarshal(out, &st) == nil && (ok == nil || ok(st)) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node %s not ready in time (logs in %s): %s", state, d.dir, last)
}

func (d *demo) cleanup() {
	for _, p := range d.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range d.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			p.Process.Kill()
		}
	}
	os.RemoveAll(d.dir)
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1080
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// indent prefixes every line written with two spaces. Lines may arrive split across writes (a
// process's output comes in whatever pieces its pipe gives), so it remembers whether the next byte
// begins a line. One goroutine writes to it; end finishes a last line without a newline.
type indent struct {
	w      io.Writer
	midway bool // the last write did not end its line
}

func (i *indent) Write(p []byte) (int, error) {
	n := len(p)
	buf := make([]byte, 0, len(p)+16)
	for len(p) > 0 {
		if !i.midway {
			buf = append(buf, "  "...)
		}
		line := p
		if j := bytes.IndexByte(p, '\n'); j >= 0 {
			line = p[:j+1]
		}
		buf = append(buf, line...)
		i.midway = line[len(line)-1] != '\n'
		p = p[len(line):]
	}
	if _, err := i.w.Write(buf); err != nil {
		return 0, err
	}
	return n, nil
}

// end writes the newline a last line without one lacks.
func (i *indent) end() {
	if i.midway {
		i.w.Write([]byte{'\n'})
		i.midway = false
	}
}

// shellJoin quotes empty arguments so the printed command can be pasted.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" {
			a = "''"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
