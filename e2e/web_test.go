package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/internal/webui"
	"github.com/warren-net/warren/node/localapi"
)

// tab is a page open in headless Chromium.
type tab struct {
	ctx     context.Context
	mu      sync.Mutex
	console []string // exceptions and CSP reports the page logged
}

// newTab starts headless Chromium (Debian's chromium) for the test. Without it the test skips, or
// fails under CI (CI=true), which installs it.
func newTab(t *testing.T) *tab {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (CI installs it: .ci/run)")
		}
		t.Skip("chromium is not installed (apt-get install chromium): the web page test needs a real browser")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()), // a fresh profile each run
		// The browser only visits the loopback pages this test serves; CI runs as root, where
		// Chromium's sandbox refuses to start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		// Nothing beyond loopback: no QUIC probes, updates, sync, or a proxy from the environment.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	tb := &tab{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancelTab()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	done := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				tb.mu.Lock()
				tb.console = append(tb.console, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		<-done
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, m := range tb.console {
			t.Errorf("page console: %s", m)
		}
	})
	return tb
}

// load opens url and waits until the page has rendered its first answer from the API, with
// ready (a JavaScript expression) true; it returns how long that took.
func (tb *tab) load(t *testing.T, url, ready string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	tb.wait(t, `document.body.dataset.loaded === "1" && (`+ready+`)`, "the page never rendered")
	return time.Since(start)
}

// wait waits until the JavaScript expression cond is true in the page (a generous deadline: the
// page polls its API every second or two).
func (tb *tab) wait(t *testing.T, cond, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 90*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(0))); err != nil {
		body, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s (%s): %v\npage text:\n%s", what, cond, err, body)
	}
}

// screenshot writes the whole page as PNG to env's path (with suffix before its extension), else
// to the test's temp dir as name, and logs where.
func (tb *tab) screenshot(t *testing.T, env, suffix, name string) {
	t.Helper()
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := os.Getenv(env)
	if path == "" {
		path = filepath.Join(t.TempDir(), name)
	} else if suffix != "" {
		ext := filepath.Ext(path)
		path = strings.TrimSuffix(path, ext) + suffix + ext
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes; set %s to keep it)", path, len(png), env)
}

// browserTimes is the browser's own measure of the page load: navigation start to the load event's
// end, and to the first data on screen (the page records it).
type browserTimes struct {
	Load        float64 `json:"load"`
	FirstRender float64 `json:"first"`
}

func (b browserTimes) String() string {
	return fmt.Sprintf("browser clock: load event at %.0f ms, first data on screen at %.0f ms", b.Load, b.FirstRender)
}

func (tb *tab) pageLoadTime(t *testing.T) browserTimes {
	b, err := chromedp.Run(tb.ctx, chromedp.Evaluate[browserTimes](
		`({load: performance.getEntriesByType("navigation")[0].loadEventEnd, first: Number(document.body.dataset.firstRenderMs)})`))
	if err != nil {
		t.Fatalf("navigation timing: %v", err)
	}
	return b
}

// TestWebPage opens the node's status page (warren up --web) in headless Chromium: it shows this
// node, a peer that joins while the page is open appears, the owner approves a pending join by
// clicking Approve and the approved node appears too. The coord's operator page (warren-coord --web)
// then lists the nodes, networks and relay load. 'warren web' serves the same page for a running
// node, and the guard refuses requests without the secret, with a foreign Host, or cross-origin.
// Screenshots go to $WARREN_SCREENSHOT and $WARREN_SCREENSHOT_COORD (else the temp dir).
func TestWebPage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and a browser")
	}
	tb := newTab(t)
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--web", "127.0.0.1:0")
	addr, fp, coordURL := coord.line(t, "warren-coord listening on"), coord.line(t, "key"), coord.line(t, "web page:")
	up := func(name string, extra ...string) (*proc, string) {
		state := filepath.Join(tmp, name)
		args := append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0"}, extra...)
		return startProc(t, "warren", args...), state
	}
	alice, aliceState := up("alice", "--expose", "tcp:22,udp:27015", "--web", "127.0.0.1:0")
	aliceURL := alice.line(t, "web page:")
	if !strings.HasPrefix(aliceURL, "http://127.0.0.1:") || len(aliceURL) < len("http://127.0.0.1:1/")+24 {
		t.Fatalf("web page URL %q: want http://127.0.0.1:PORT/SECRET/", aliceURL)
	}
	waitLoggedIn(t, aliceState)
	warren(t, true, "network", "create", "lan", "--password", "pw", "--state", aliceState)
	warren(t, true, "network", "create", "club", "--approval", "--state", aliceState)

	took := tb.load(t, aliceURL, `document.getElementById("self-name").textContent === "alice"`)
	t.Logf("node page load, fresh browser: %v until the first status is shown (%v)", took, tb.pageLoadTime(t))
	tb.wait(t, `!document.getElementById("peers-empty").hidden && document.getElementById("self-exposed").textContent === "tcp:22, udp:27015"`,
		"no peers and the exposed ports at first")

	// A peer joins while the page is open.
	_, bobState := up("bob")
	_, carolState := up("carol")
	waitLoggedIn(t, bobState)
	waitLoggedIn(t, carolState)
	warren(t, true, "network", "join", "lan", "--password", "pw", "--state", carolState)
	tb.wait(t, `(r => r && r.textContent.includes("online"))(document.querySelector('tr[data-peer="carol"]'))`, "carol never showed up online")

	// A join waits for the owner, who approves it on the page.
	if out, code := warrenRun(t, "network", "join", "club", "--state", bobState); code != 3 {
		t.Fatalf("bob's join: status %d, want 3 (pending):\n%s", code, out)
	}
	tb.wait(t, `document.querySelector('button.approve[data-node="bob"]') !== null`, "bob's join request never showed")
	tb.screenshot(t, "WARREN_SCREENSHOT", "-pending", "web-node-pending.png")
	if err := chromedp.Do(tb.ctx, chromedp.Click(`button.approve[data-node="bob"]`)); err != nil {
		t.Fatalf("click Approve: %v", err)
	}
	tb.wait(t, `(r => r && r.textContent.includes("online"))(document.querySelector('tr[data-peer="bob"]')) && !document.getElementById("joins-empty").hidden`,
		"bob never appeared as a peer after the approval")
	if nets := statusOf(t, bobState).Self.Networks; !slices.Contains(nets, "club") {
		t.Errorf("bob's networks after the approval on the page: %v", nets)
	}
	// Some RTT history for the screenshot (one sample a poll).
	tb.wait(t, `(p => p && p.points.numberOfItems >= 10)(document.querySelector('tr[data-peer="carol"] svg polyline'))`, "no RTT history for carol")
	tb.screenshot(t, "WARREN_SCREENSHOT", "", "web-node.png")
	// Loaded again, in a browser already warm: the page's own cost.
	took = tb.load(t, aliceURL, `document.querySelector('tr[data-peer="bob"]') !== null`)
	t.Logf("node page load, again: %v until the peers are shown (%v)", took, tb.pageLoadTime(t))

	t.Run("coord page", func(t *testing.T) {
		took := tb.load(t, coordURL, `document.querySelector('tr[data-node="bob"]') !== null`)
		t.Logf("coord page load: %v until the first listing is shown (%v)", took, tb.pageLoadTime(t))
		tb.wait(t, `["alice", "bob", "carol"].every(n => document.querySelector('tr[data-node="' + n + '"]').textContent.includes("online"))`+
			` && document.querySelector('tr[data-network="club"]') !== null && document.querySelector('tr[data-network="lan"]') !== null`,
			"the coord page does not list the nodes online and both networks")
		tb.wait(t, `(t => t.includes("coord") && t.includes("3"))(document.querySelector("#relays tbody").textContent)`,
			"the coord page does not show its relay with 3 nodes bound")
		tb.screenshot(t, "WARREN_SCREENSHOT_COORD", "", "web-coord.png")
		var relays []operatorapi.Relay
		coordJSON(t, &relays, "relays", "--data", filepath.Join(tmp, "coord"))
		if len(relays) != 1 || relays[0].Kind != "coord" || relays[0].Addr != addr || relays[0].Nodes == nil || *relays[0].Nodes != 3 {
			t.Errorf("warren-coord relays: %+v", relays)
		}
	})

	t.Run("warren web and the guard", func(t *testing.T) {
		web := startProc(t, "warren", "web", "--state", bobState)
		u := web.line(t, "web page:")
		var st localapi.Status
		if code, body := httpGet(t, u+"api/status", ""); code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Self.Name != "bob" {
			t.Fatalf("warren web status: %d %s", code, body)
		}
		secret := strings.Split(u, "/")[3]
		base := strings.TrimSuffix(u, secret+"/")
		if code, _ := httpGet(t, base+"api/status", ""); code != http.StatusNotFound {
			t.Errorf("without the secret: %d, want 404", code)
		}
		if code, _ := httpGet(t, u+"api/status", "rebind.example:80"); code != http.StatusMisdirectedRequest {
			t.Errorf("foreign Host: %d, want 421", code)
		}
		for _, origin := range []string{"http://evil.example", ""} {
			req, _ := http.NewRequest("POST", u+"api/join", strings.NewReader(`{"op":"deny","network":"club","key":"x"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(webui.TokenHeader, secret)
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST with Origin %q: %d, want 403", origin, resp.StatusCode)
			}
		}
		if out, code := warrenRun(t, "web", "--listen", "0.0.0.0:0", "--state", bobState); code == 0 || !strings.Contains(out, "not loopback") {
			t.Errorf("warren web on 0.0.0.0: status %d:\n%s", code, out)
		}
		// warren up binds the page before it logs in: a bad address leaves nothing on the coord.
		if out, code := warrenRun(t, "up", "--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, "dave"), "--name", "dave",
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0", "--web", "0.0.0.0:8080"); code == 0 || !strings.Contains(out, "not loopback") {
			t.Errorf("warren up --web 0.0.0.0:8080: status %d:\n%s", code, out)
		}
		if _, ok := nodesByName(t, filepath.Join(tmp, "coord"))["dave"]; ok {
			t.Error("a node whose --web was refused logged in anyway")
		}
	})
}

// httpGet fetches url (with Host header host, if set) and returns the status and body.
func httpGet(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
