package webui

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testSecret = "AAAAAAAAAAAAAAAAAAAAAAAA" // 24 characters, as NewSecret makes

func testGuard(t *testing.T) (*Guard, http.Handler, *[]string) {
	t.Helper()
	g, err := NewGuard(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8123}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path)
		io.WriteString(w, "ok")
	}))
	return g, h, &seen
}

func do(h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(`{}`))
	r.Host = "127.0.0.1:8123"
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// okPost is a POST the page's script makes.
var okPost = map[string]string{"Origin": "http://127.0.0.1:8123", TokenHeader: testSecret, "Content-Type": "application/json"}

func with(base map[string]string, k, v string) map[string]string {
	m := map[string]string{}
	for a, b := range base {
		m[a] = b
	}
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
	return m
}

func TestGuardSecretPrefix(t *testing.T) {
	g, h, seen := testGuard(t)
	if got, want := g.URL(), "http://127.0.0.1:8123/"+testSecret+"/"; got != want {
		t.Errorf("URL %q, want %q", got, want)
	}
	for _, tc := range []struct {
		path string
		code int
		saw  string
	}{
		{"/" + testSecret + "/", 200, "GET /"},
		{"/" + testSecret, 200, "GET /"},
		{"/" + testSecret + "/api/status", 200, "GET /api/status"},
		{"/", 404, ""},
		{"/api/status", 404, ""},
		{"/" + testSecret[:23] + "B/", 404, ""}, // one character off
		{"/" + testSecret + "X/", 404, ""},      // longer
		{"/" + testSecret[:20] + "/", 404, ""},  // shorter
		{"/" + strings.ToLower(testSecret) + "/", 404, ""},
	} {
		*seen = nil
		w := do(h, "GET", tc.path, nil)
		if w.Code != tc.code || (tc.saw != "") != (len(*seen) == 1) || tc.saw != "" && (*seen)[0] != tc.saw {
			t.Errorf("GET %s: %d, handler saw %v; want %d, %q", tc.path, w.Code, *seen, tc.code, tc.saw)
		}
	}
}

func TestGuardHost(t *testing.T) {
	_, h, seen := testGuard(t)
	for host, code := range map[string]int{
		"127.0.0.1:8123": 200, "localhost:8123": 200,
		"evil.example:8123": 421, "127.0.0.1:8124": 421, "127.0.0.1": 421, "localhost": 421,
		"127.0.0.2:8123": 421, "": 421, "[::1]:8123": 421, "localhost.:8123": 421,
	} {
		*seen = nil
		w := do(h, "GET", "/"+testSecret+"/", map[string]string{"Host": host})
		if w.Code != code || (code == 200) != (len(*seen) == 1) {
			t.Errorf("Host %q: %d (handler ran: %v), want %d", host, w.Code, len(*seen) == 1, code)
		}
	}
}

func TestGuardPost(t *testing.T) {
	_, h, seen := testGuard(t)
	path := "/" + testSecret + "/api/join"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"same origin", okPost, 200},
		{"localhost origin", with(okPost, "Origin", "http://localhost:8123"), 200},
		{"no Origin, Sec-Fetch-Site same-origin", with(with(okPost, "Origin", ""), "Sec-Fetch-Site", "same-origin"), 200},
		{"cross origin", with(okPost, "Origin", "http://evil.example"), 403},
		{"other port", with(okPost, "Origin", "http://127.0.0.1:9999"), 403},
		{"https origin", with(okPost, "Origin", "https://127.0.0.1:8123"), 403},
		{"null origin", with(okPost, "Origin", "null"), 403},
		{"no Origin, no Sec-Fetch-Site", with(okPost, "Origin", ""), 403},
		{"no Origin, cross-site", with(with(okPost, "Origin", ""), "Sec-Fetch-Site", "cross-site"), 403},
		{"no token", with(okPost, TokenHeader, ""), 403},
		{"wrong token", with(okPost, TokenHeader, testSecret[:23]+"B"), 403},
		{"form post", with(okPost, "Content-Type", "application/x-www-form-urlencoded"), 403},
		{"text/plain", with(okPost, "Content-Type", "text/plain"), 403},
		{"json with charset", with(okPost, "Content-Type", "application/json; charset=utf-8"), 200},
	} {
		*seen = nil
		w := do(h, "POST", path, tc.hdr)
		if w.Code != tc.code || (tc.code == 200) != (len(*seen) == 1) {
			t.Errorf("%s: %d (handler ran: %v), want %d: %s", tc.name, w.Code, len(*seen) == 1, tc.code, w.Body)
		}
	}
	for _, m := range []string{"PUT", "DELETE", "PATCH", "OPTIONS"} {
		*seen = nil
		if w := do(h, m, path, okPost); w.Code != 405 || len(*seen) != 0 {
			t.Errorf("%s: %d, want 405", m, w.Code)
		}
	}
}

func TestGuardHeaders(t *testing.T) {
	_, h, _ := testGuard(t)
	for _, path := range []string{"/" + testSecret + "/", "/nope"} { // also on refusals
		w := do(h, "GET", path, nil)
		for k, v := range map[string]string{
			"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-store",
			"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
		} {
			if got := w.Header().Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", path, k, got, v)
			}
		}
	}
	if strings.Contains(CSP, "unsafe-inline") || strings.Contains(CSP, "unsafe-eval") || !strings.Contains(CSP, "script-src 'self'") {
		t.Errorf("CSP allows inline script: %s", CSP)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "127.0.0.1", ""} {
		ln, err := Listen(addr)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		} else if addr != "127.0.0.1" && addr != "" && !strings.Contains(err.Error(), "not loopback") {
			t.Errorf("Listen(%q): %v, want a 'not loopback' error", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		if !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
			t.Errorf("Listen(%q) on %v", addr, ln.Addr())
		}
		ln.Close()
	}
	if _, err := NewGuard(&net.TCPAddr{IP: net.IPv4zero, Port: 1}, testSecret); err == nil {
		t.Error("NewGuard accepted a listener on 0.0.0.0")
	}
	if _, err := NewGuard(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, "short"); err == nil {
		t.Error("NewGuard accepted a short secret")
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if len(a) != 24 || a == b || strings.ContainsAny(a, "+/=") {
		t.Errorf("secrets %q, %q: want 24 distinct base64url characters", a, b)
	}
}
