// Package webui is what the node's and the coord's status pages share: a listener that is loopback
// only, a per-start secret that prefixes every URL, and the Guard middleware that checks every request
// (secret, Host header against DNS rebinding, Origin on state changes) and sets strict security headers.
// It also serves the pages' embedded script and style sheet (assets.go). Standard library only.
package webui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// SecretBytes is the size of a secret: 144 bits, 24 characters of base64url.
const SecretBytes = 18

// NewSecret returns a fresh random secret for one start of a page server.
func NewSecret() (string, error) {
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("web page secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Listen opens a TCP listener on addr, which must be a loopback address with a port
// ("127.0.0.1:8080", "[::1]:0", "localhost:8080"): the page has no login of its own, so anything
// that reached it from the network would see and change what it shows.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("web page address %q: want 127.0.0.1:PORT: %w", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return nil, fmt.Errorf("web page address %q is not loopback: the page listens on 127.0.0.1 or [::1] only (it has no login; reach it from elsewhere through an SSH tunnel)", addr)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.Unmap().String(), port))
	if err != nil {
		return nil, fmt.Errorf("web page: %w", err)
	}
	return ln, nil
}

// Guard checks every request to a page server before its handler sees it. Make one with NewGuard.
type Guard struct {
	secret string
	url    string          // http://ADDR:PORT/SECRET/
	prefix string          // "/SECRET"
	hosts  map[string]bool // Host headers accepted
	origin map[string]bool // Origin headers accepted on state changes
}

// NewGuard returns a Guard for a server listening on addr (the listener's address) with secret.
func NewGuard(addr net.Addr, secret string) (*Guard, error) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || !ta.IP.IsLoopback() {
		return nil, fmt.Errorf("web page: listener %v is not on loopback", addr)
	}
	if len(secret) < 22 { // 128 bits of base64url
		return nil, fmt.Errorf("web page: secret too short")
	}
	port := strconv.Itoa(ta.Port)
	self := net.JoinHostPort(ta.IP.String(), port)
	g := &Guard{secret: secret, url: "http://" + self + "/" + secret + "/", prefix: "/" + secret, hosts: map[string]bool{}, origin: map[string]bool{}}
	for _, h := range []string{self, "localhost:" + port} {
		g.hosts[h] = true
		g.origin["http://"+h] = true
	}
	return g, nil
}

// URL is the address to open: http://HOST:PORT/SECRET/.
func (g *Guard) URL() string { return g.url }

// TokenHeader is the header a state-changing request repeats the secret in (the page's script reads
// it from its own URL). A cross-origin page cannot set it without a CORS preflight, which is refused.
const TokenHeader = "X-Warren-Token"

// Wrap returns h behind the guard. h sees paths without the secret prefix ("/", "/api/status").
// Requests are refused, before h runs, when:
//   - the Host header is not this listener's loopback address:port or localhost:port (a DNS
//     rebinding page in the browser sends its own host name): 421;
//   - the path does not start with the secret: 404, the same as for any unknown path;
//   - the method is not GET, HEAD or POST: 405;
//   - a POST lacks Origin equal to this server's (or, without Origin, Sec-Fetch-Site:
//     same-origin), or lacks the secret in TokenHeader, or is not application/json: 403.
//
// Every answer carries a strict Content-Security-Policy (scripts and styles from this server only,
// no inline script), X-Frame-Options DENY, no-store, nosniff and no-referrer.
func (g *Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHeaders(w.Header())
		if !g.hosts[r.Host] {
			http.Error(w, "wrong Host header: open the page at the address the command printed", http.StatusMisdirectedRequest)
			return
		}
		rest, ok := g.strip(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			if err := g.checkPost(r); err != "" {
				http.Error(w, err, http.StatusForbidden)
				return
			}
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		h.ServeHTTP(w, r2)
	})
}

// strip removes the secret prefix from path, compared in constant time.
func (g *Guard) strip(path string) (string, bool) {
	if len(path) < len(g.prefix) {
		return "", false
	}
	head, rest := path[:len(g.prefix)], path[len(g.prefix):]
	if subtle.ConstantTimeCompare([]byte(head), []byte(g.prefix)) != 1 {
		return "", false
	}
	if rest == "" {
		rest = "/"
	}
	if rest[0] != '/' {
		return "", false
	}
	return rest, true
}

// checkPost says why a POST is refused, or "" if it may go on.
func (g *Guard) checkPost(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		if !g.origin[o] {
			return "cross-origin request refused"
		}
	} else if r.Header.Get("Sec-Fetch-Site") != "same-origin" {
		return "request without Origin refused"
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(TokenHeader)), []byte(g.secret)) != 1 {
		return "missing or wrong " + TokenHeader
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != "application/json" {
		return "want Content-Type application/json"
	}
	return ""
}

// CSP is the Content-Security-Policy of every answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func setHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}
