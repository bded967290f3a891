//go:build !windows

// Package pgtest starts a throwaway PostgreSQL server for tests: Debian's `postgresql` package
// (binaries under /usr/lib/postgresql/VERSION/bin), initdb into a fresh directory and postgres on a
// free 127.0.0.1 port, stopped and removed when the test ends. As root it runs both as user
// nobody (PostgreSQL refuses to run as root).
//
// Where PostgreSQL is not installed the test is skipped with the reason, except under CI=true,
// where it fails: CI installs the package (.ci/run), so a missing one is a broken setup.
//
// The server trusts every connection from 127.0.0.1 (user postgres, no password): it lives only as
// long as the test, on loopback.
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Server is a running throwaway PostgreSQL.
type Server struct {
	bin    string // directory of initdb, postgres, psql
	dir    string // data directory and log
	port   int
	cmd    *exec.Cmd
	exited chan error          // cmd.Wait's result
	cred   *syscall.Credential // nil = run as ourselves
	next   atomic.Int64        // database name counter
}

// BinDir returns the directory of the newest installed PostgreSQL's binaries, or "" if none is.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var ok []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		return ""
	}
	sort.Slice(ok, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(ok[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(ok[j])))
		return vi < vj
	})
	return ok[len(ok)-1]
}

// Start starts a server for the test and stops it (removing its files) at the test's end.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := BinDir()
	if bin == "" {
		const why = "PostgreSQL is not installed (apt-get install postgresql): no /usr/lib/postgresql/*/bin/postgres"
		if os.Getenv("CI") == "true" {
			tb.Fatal(why + "; CI must install it (.ci/run)")
		}
		tb.Skip(why)
	}
	s := &Server{bin: bin}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	s.dir = dir
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			tb.Fatalf("pgtest: running as root and there is no user nobody to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		tb.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	// A free port: taken by the kernel, released, handed to postgres. Another process could grab it
	// in between; then postgres fails to start and we try another.
	for attempt := 0; ; attempt++ {
		s.port = freePort(tb)
		err := s.startPostgres(data)
		if err == nil {
			break
		}
		if attempt == 2 {
			tb.Fatalf("pgtest: %v", err)
		}
	}
	tb.Cleanup(s.stop)
	return s
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *Server) run(name string, args ...string) ([]byte, error) {
	return s.command(name, args...).CombinedOutput()
}

// startPostgres starts postgres on s.port, loopback TCP only, and waits until it takes connections.
func (s *Server) startPostgres(data string) error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	if s.cred != nil {
		os.Chown(logPath, int(s.cred.Uid), int(s.cred.Gid))
	}
	cmd := s.command("postgres", "-D", data, "-p", strconv.Itoa(s.port), "-h", "127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // a ^C to the test does not reach it before its cleanup does
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, err := s.run("pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", "postgres"); err == nil {
			break
		} else if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres not ready after 60s: %s", out)
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres exited: %v\n%s", err, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.cmd = cmd
	s.exited = exited
	return nil
}

// stop shuts the server down (fast shutdown: SIGINT), killing it if it takes longer than 10s.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL returns the connection URL of database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d", s.next.Add(1))
	if out, err := s.Exec("postgres", "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v\n%s", err, out)
	}
	return s.URL(name)
}

// Exec runs SQL in database db with psql and returns its output (unaligned, tuples only).
func (s *Server) Exec(db, sql string) (string, error) {
	out, err := s.run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(s.port), "-U", "postgres", "-d", db, "-c", sql)
	return string(bytes.TrimSpace(out)), err
}

// Log returns what the server logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return strings.TrimSpace(string(b))
}
