package webui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

//go:embed assets
var assets embed.FS

// Page names a page: its HTML (assets/PAGE.html) and script (assets/PAGE.js).
type Page string

// The pages.
const (
	NodePage  Page = "node"
	CoordPage Page = "coord"
)

// Server serves one page behind a Guard on a loopback listener until Close.
type Server struct {
	ln    net.Listener
	guard *Guard
	srv   *http.Server
	done  chan struct{}
}

// Start listens on addr (loopback only, see Listen) with a fresh secret and serves page: GET / is
// the page, /PAGE.js and /style.css its assets, and every path under /api/ goes to api (paths
// without the secret prefix). The URL to open is Server.URL.
func Start(addr string, page Page, api http.Handler) (*Server, error) {
	html, err := assets.ReadFile("assets/" + string(page) + ".html")
	if err != nil {
		return nil, fmt.Errorf("web page %q: %w", page, err)
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, err
	}
	ln, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	guard, err := NewGuard(ln.Addr(), secret)
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(html)
	})
	static := http.FileServerFS(assets)
	for _, name := range []string{"common.js", string(page) + ".js", "style.css"} {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/assets/" + name
			static.ServeHTTP(w, r2)
		})
	}
	mux.Handle("/api/", api)
	s := &Server{ln: ln, guard: guard, done: make(chan struct{}), srv: &http.Server{
		Handler:           guard.Wrap(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the address to open, secret included: http://127.0.0.1:PORT/SECRET/.
func (s *Server) URL() string { return s.guard.URL() }

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}

// MaxBody is the largest request body ReadJSON accepts.
const MaxBody = 4 << 10

// ReadJSON decodes a request body of at most MaxBody bytes holding exactly one JSON value with no
// unknown fields into v.
func ReadJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, MaxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	if dec.InputOffset() > MaxBody {
		return errors.New("bad request body: too large")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("bad request body: more than one JSON value")
	}
	return nil
}

// WriteJSON answers with v as JSON and status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// WriteError answers with {"error": msg} and status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}
