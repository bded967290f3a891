package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node/localapi"
)

// readmeBlock returns the shell commands of the README's code block right after the marker
// comment <!-- NAME -->, joined into one script.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- "+name+" -->\n```sh\n")
	if !ok {
		t.Fatalf("README has no sh block after <!-- %s -->", name)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README block %s is not closed", name)
	}
	return block
}

// replaceOnce replaces old by new in s and fails the test unless old occurs exactly once.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times in:\n%s", old, n, s)
	}
	return strings.Replace(s, old, new, 1)
}

// sh runs a shell script in dir with the test's binaries first on PATH and extra environment.
func sh(t *testing.T, dir, script string, env ...string) (string, error) {
	t.Helper()
	binDir := filepath.Dir(bin(t, "warren"))
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")}, env...)...)
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = testkit.Writer(t)
	err := cmd.Run()
	return out.String(), err
}

func peerNamed(st localapi.Status, name string) (localapi.Peer, bool) {
	for _, p := range st.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return localapi.Peer{}, false
}

// waitPeer polls the node with state dir until cond holds for the named peer (found or not), and
// returns when it first did.
func waitPeer(t *testing.T, state, name, what string, within time.Duration, cond func(p localapi.Peer, found bool) bool) time.Time {
	t.Helper()
	var p localapi.Peer
	var ok bool
	testkit.Eventually(t, within, func() bool { p, ok = peerNamed(statusOf(t, state), name); return cond(p, ok) },
		"%s (peer %s: %+v, present %v)", what, name, &p, later(func() any { return ok }))
	return time.Now()
}

// waitLoggedIn waits until the node with state dir is logged in (its API answers earlier).
func waitLoggedIn(t *testing.T, state string) {
	t.Helper()
	waitAPI(t, state)
	testkit.Eventually(t, 60*time.Second, func() bool { return statusOf(t, state).Coord.Connected }, "node with state %s never logged in", state)
}

func present(_ localapi.Peer, found bool) bool { return found }
func absent(_ localapi.Peer, found bool) bool  { return !found }
func online(p localapi.Peer, found bool) bool  { return found && p.Online }
func offline(p localapi.Peer, found bool) bool { return found && !p.Online }

// tarball returns a .tar.gz holding one file.
func tarball(t *testing.T, name string, content []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))})
	tw.Write(content)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return buf.Bytes()
}

// ciSetup starts a coord (with the given ephemeral timeout) and a node "artifacts" that serves
// /build.tar.gz on an exposed port, owns network "builds", and returns what the recipe needs.
type ciSetup struct {
	coordData, coordAddr, fp string
	artifactsState           string
	port                     int
	content                  []byte
	// listed receives, for each fetch of the artifact, whether the artifacts node listed the
	// fetching job's node ("ci-42") as a peer while it served the fetch.
	listed chan bool
}

func newCISetup(t *testing.T, ephemeralTimeout time.Duration) *ciSetup {
	t.Helper()
	tmp := t.TempDir()
	s := &ciSetup{coordData: filepath.Join(tmp, "coord"), artifactsState: filepath.Join(tmp, "artifacts"),
		content: []byte("built by the test at " + time.Now().String() + "\n"), listed: make(chan bool, 4)}
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", s.coordData, "--ephemeral-timeout", ephemeralTimeout.String())
	s.coordAddr = coord.line(t, "warren-coord listening on")
	s.fp = coord.line(t, "key")

	tgz := tarball(t, "artifact.txt", s.content)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/build.tar.gz" {
			http.NotFound(w, r)
			return
		}
		// While the job's fetch is being served its node is up: the artifacts node must list it.
		st, err := cliStatus(s.artifactsState)
		_, ok := peerNamed(st, "ci-42")
		select {
		case s.listed <- err == nil && ok:
		default:
		}
		w.Write(tgz)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.port = ln.Addr().(*net.TCPAddr).Port

	startProc(t, "warren", "up", "--coord", s.coordAddr, "--coord-key", s.fp, "--state", s.artifactsState, "--name", "artifacts",
		"--listen", "127.0.0.1:0", "--socks", "", "--expose", fmt.Sprintf("tcp:%d", s.port))
	waitLoggedIn(t, s.artifactsState)
	warren(t, true, "network", "create", "builds", "--state", s.artifactsState, "--password", "pw")
	return s
}

// TestCIRecipe runs the README's container-and-CI recipe for real, with the binaries: the
// operator's key command (with the test's data directory), then the job's one command (with the
// test's artifact port). The job node joins with the ephemeral key, fetches and unpacks the
// artifact through SOCKS from its peer, exits with status 0, and is gone from the peer's
// `warren status --json` at once (it logged out). A second job node that is SIGKILLed instead
// stays listed, offline, for the configured --ephemeral-timeout and is gone right after it.
func TestCIRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	needTool(t, "curl", "tar")
	t.Parallel() // mostly waiting for the coord to see a killed node offline: overlaps the other long waits
	const timeout = 5 * time.Second
	s := newCISetup(t, timeout)

	keyScript := replaceOnce(t, readmeBlock(t, "ci-recipe:key"), "/var/lib/warren-coord", s.coordData)
	out, err := sh(t, t.TempDir(), keyScript)
	key := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(key, "warren-auth-") || strings.Contains(key, "\n") {
		t.Fatalf("key command: %v, output %q", err, out)
	}

	jobDir := t.TempDir()
	jobScript := replaceOnce(t, readmeBlock(t, "ci-recipe:job"), "artifacts.warren:8080", fmt.Sprintf("artifacts.warren:%d", s.port))
	env := []string{"WARREN_COORD=" + s.coordAddr, "WARREN_COORD_KEY=" + s.fp, "WARREN_AUTHKEY=" + key, "CI_JOB_ID=42", "TMPDIR=" + t.TempDir()}
	start := time.Now()
	if _, err := sh(t, jobDir, jobScript, env...); err != nil {
		t.Fatalf("the job command failed: %v", err)
	}
	exited := time.Now()
	got, err := os.ReadFile(filepath.Join(jobDir, "artifact.txt"))
	if err != nil || !bytes.Equal(got, s.content) {
		t.Fatalf("unpacked artifact: %q, %v", got, err)
	}
	select {
	case ok := <-s.listed:
		if !ok {
			t.Error("the artifacts node did not list the job's node while serving its fetch")
		}
	default:
		t.Error("the job's fetch never reached the artifacts server")
	}
	gone := waitPeer(t, s.artifactsState, "ci-42", "job node gone after a clean exit", timeout-time.Second, absent)
	t.Logf("job ran %v; its node was gone from the peer's status %v after it exited (timeout %v: it logged out)",
		exited.Sub(start).Round(time.Millisecond), gone.Sub(exited).Round(time.Millisecond), timeout)

	var keys []struct {
		State string `json:"state"`
		Uses  int    `json:"uses"`
	}
	if out, err := sh(t, t.TempDir(), "warren-coord authkey list --json --data "+s.coordData); err != nil || json.Unmarshal([]byte(out), &keys) != nil ||
		len(keys) != 1 || keys[0].Uses != 1 || keys[0].State != "valid" {
		t.Errorf("authkey list after the job: %v %s", err, out)
	}

	// A job killed outright: removed after the timeout, not before.
	state := filepath.Join(t.TempDir(), "job2")
	job := startProc(t, "warren", "up", "--coord", s.coordAddr, "--coord-key", s.fp, "--state", state, "--name", "ci-43",
		"--listen", "127.0.0.1:0", "--socks", "", "--authkey", key)
	waitPeer(t, s.artifactsState, "ci-43", "second job online", 60*time.Second, online)
	job.kill()
	killed := time.Now()
	// Offline after the coord's idle timeout (45 s for a node with one coord: control.Timers).
	off := waitPeer(t, s.artifactsState, "ci-43", "killed job offline", 90*time.Second, offline)
	gone = waitPeer(t, s.artifactsState, "ci-43", "killed job removed", timeout+5*time.Second, absent)
	t.Logf("SIGKILLed job: offline after %v (the coord's idle timeout), removed %v after that (--ephemeral-timeout %v)",
		off.Sub(killed).Round(100*time.Millisecond), gone.Sub(off).Round(100*time.Millisecond), timeout)
	if gone.Sub(off) < timeout-time.Second {
		t.Errorf("removed %v after going offline, before the %v timeout", gone.Sub(off), timeout)
	}
}

// TestEphemeralLeave: ephemeral nodes (by flag, joined with a password) leave at once on
// `warren down` and on SIGTERM; a permanent node that stops only goes offline. The coord's timeout
// is an hour, so only the logout can explain the removals.
func TestEphemeralLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	s := newCISetup(t, time.Hour)
	up := func(name string, extra ...string) (*proc, string) {
		state := filepath.Join(t.TempDir(), name)
		p := startProc(t, "warren", append([]string{"up", "--coord", s.coordAddr, "--coord-key", s.fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", ""}, extra...)...)
		waitLoggedIn(t, state)
		warren(t, true, "network", "join", "builds", "--state", state, "--password", "pw")
		waitPeer(t, s.artifactsState, name, name+" online", 60*time.Second, online)
		return p, state
	}
	down, downState := up("by-down", "--ephemeral")
	term, _ := up("by-term", "--ephemeral")
	perm, _ := up("permanent")
	if !statusOf(t, downState).Self.Ephemeral {
		t.Error("status does not say the node is ephemeral")
	}

	start := time.Now()
	out := warren(t, true, "down", "--state", downState)
	if !strings.Contains(out, "logged out") {
		t.Errorf("warren down said: %s", out)
	}
	select {
	case <-down.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the node did not exit after warren down")
	}
	if down.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("node exited with %d after warren down", down.cmd.ProcessState.ExitCode())
	}
	waitPeer(t, s.artifactsState, "by-down", "by-down removed", 30*time.Second, absent)
	t.Logf("warren down: removed from the peer's status %v after the command started", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	term.stop()
	waitPeer(t, s.artifactsState, "by-term", "by-term removed", 30*time.Second, absent)
	t.Logf("SIGTERM: removed %v after the signal", time.Since(start).Round(time.Millisecond))

	// A permanent node's exit is no logout: the coord marks it offline, and would have removed it
	// instead (as it did by-term) had it taken the exit for one; the reaper's timeout is an hour.
	perm.stop()
	waitPeer(t, s.artifactsState, "permanent", "permanent node offline", 30*time.Second, offline)
	waitPeer(t, s.artifactsState, "permanent", "permanent node still listed", 0, present)
}

// TestAuthKeyRefused: nodes with a used-up, expired, revoked or made-up key are refused at login,
// say why, and exit at once instead of retrying. The keys come through each of the three ways.
func TestAuthKeyRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	s := newCISetup(t, time.Hour)
	create := func(args ...string) string {
		out, err := sh(t, t.TempDir(), "warren-coord authkey create --data "+s.coordData+" --network builds "+strings.Join(args, " ")+" | tail -1")
		if err != nil {
			t.Fatalf("authkey create: %v", err)
		}
		return strings.TrimSpace(out)
	}
	single := create("--tag", "ci")
	expiring := create("--reusable", "--expiry", "1s")
	revoked := create("--reusable")
	var keys []struct{ ID string }
	out, _ := sh(t, t.TempDir(), "warren-coord authkey list --json --data "+s.coordData)
	json.Unmarshal([]byte(out), &keys)
	for _, k := range keys {
		if strings.Contains(revoked, k.ID) {
			if out, err := sh(t, t.TempDir(), "warren-coord authkey revoke "+k.ID+" --data "+s.coordData); err != nil {
				t.Fatalf("revoke: %v %s", err, out)
			}
		}
	}

	upWith := func(name string, keyArgs []string, env ...string) (string, time.Duration, error) {
		state := filepath.Join(t.TempDir(), name)
		args := append([]string{"up", "--coord", s.coordAddr, "--coord-key", s.fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", ""}, keyArgs...)
		start := time.Now()
		cmd := exec.Command(bin(t, "warren"), args...)
		cmd.Env = append(os.Environ(), env...)
		// A node that is admitted keeps running: stop it once it says it is up.
		var buf syncBuffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for {
			select {
			case err := <-done:
				return buf.String(), time.Since(start), err
			case <-time.After(50 * time.Millisecond):
				if strings.Contains(buf.String(), "up:") {
					cmd.Process.Signal(os.Interrupt)
					err := <-done
					return buf.String(), time.Since(start), err
				}
			}
		}
	}

	// The single-use key, from the environment: admitted once, into builds.
	if out, _, err := upWith("first", nil, "WARREN_AUTHKEY="+single); err != nil || !strings.Contains(out, "up:") {
		t.Fatalf("first use of the key: %v\n%s", err, out)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(single+"\n"), 0o600)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(2 * time.Second))) // the 1s key has expired
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"second", []string{"--authkey-file", keyFile}, "already used"},
		{"late", []string{"--authkey", expiring}, "expired"},
		{"leaked", []string{"--authkey", revoked}, "was revoked"},
		{"forged", []string{"--authkey", "warren-auth-0123456789ab-" + strings.Repeat("0", 64)}, "invalid auth key"},
	} {
		out, took, err := upWith(tc.name, tc.args)
		if err == nil || !strings.Contains(out, "login refused") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: err=%v, want a refusal saying %q:\n%s", tc.name, err, tc.want, out)
		}
		if took > 10*time.Second {
			t.Errorf("%s: took %v to give up; a refused key must not be retried", tc.name, took)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		t.Logf("%s: exit after %v: %s", tc.name, took.Round(time.Millisecond), lines[len(lines)-1])
	}
	// The first node is still in builds, listed by its peer; none of the refused ones is.
	st := statusOf(t, s.artifactsState)
	if _, ok := peerNamed(st, "first"); !ok || len(st.Peers) != 1 {
		t.Errorf("artifacts' peers: %+v", st.Peers)
	}
}
