package socks

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// HTTP proxy limits.
const (
	maxHTTPHeader   = 64 << 10         // request line + headers
	httpIdleTimeout = 60 * time.Second // between requests on a kept-alive client connection
)

// httpProxy serves HTTP proxy requests: CONNECT host:port (tunnels, e.g. HTTPS) and absolute-URI
// requests (GET http://b.warren:8080/ ...), forwarded with a shared transport that dials through the
// Server's resolver and dialer.
type httpProxy struct {
	s  *Server
	tr *http.Transport
}

func newHTTPProxy(s *Server) *httpProxy {
	return &httpProxy{s: s, tr: &http.Transport{
		DialContext:         s.dialName,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}

// dialName resolves host names with Config.Resolve and dials with Config.Dial, within DialTimeout.
func (s *Server) dialName(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if s.cfg.Resolve == nil {
			return nil, fmt.Errorf("%w: %q", ErrUnknownName, host)
		}
		if ip, err = s.cfg.Resolve(ctx, host); err != nil {
			return nil, err
		}
	}
	return s.cfg.Dial(ctx, network, net.JoinHostPort(ip.String(), port))
}

// capReader fails reads once n bytes have been read, bounding what a request's headers may take.
type capReader struct {
	r io.Reader
	n int64
}

var errHeaderTooLarge = errors.New("request header too large")

func (c *capReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(b)) > c.n {
		b = b[:c.n]
	}
	n, err := c.r.Read(b)
	c.n -= int64(n)
	return n, err
}

const unlimited = 1 << 62

// maxAuthFailures is how many requests without valid credentials one client connection may send
// before the proxy closes it: a browser sends one, reads the 407 and sends it again with them.
const maxAuthFailures = 3

// serve handles requests on one client connection until it closes or asks to. Until a request
// carries valid credentials (when the proxy wants them), the connection stays under the handshake
// deadline set by serveConn, reading and discarding included, and gets maxAuthFailures tries: a
// client without them cannot hold a connection slot.
func (p *httpProxy) serve(c *peekedConn, cr *capReader) error {
	first, failures := true, 0
	for {
		if first {
			first = false // the handshake deadline set by serveConn applies
		} else if failures == 0 {
			c.SetReadDeadline(time.Now().Add(httpIdleTimeout))
		}
		cr.n = maxHTTPHeader + int64(c.r.Buffered())
		req, err := http.ReadRequest(c.r)
		cr.n = unlimited
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			status := http.StatusBadRequest
			if errors.Is(err, errHeaderTooLarge) {
				status = http.StatusRequestHeaderFieldsTooLarge
			}
			writeError(c, status, "bad request")
			return fmt.Errorf("http: read request: %w", err)
		}
		if p.s.cfg.User != "" && !p.authorized(req) {
			failures++
			io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
			resp := errorResponse(http.StatusProxyAuthRequired, "proxy authentication required")
			resp.Header.Set("Proxy-Authenticate", `Basic realm="warren"`)
			if failures >= maxAuthFailures {
				resp.Close = true
			}
			if err := resp.Write(c); err != nil || failures >= maxAuthFailures {
				return errors.New("http: no valid proxy credentials")
			}
			continue
		}
		failures = 0
		c.SetDeadline(time.Time{})
		if strings.EqualFold(hostOnly(req.Host), "local.warren") {
			// The node's local API name: never reachable through the proxy (no DNS-rebinding path).
			writeError(c, http.StatusForbidden, "the local API is not reachable through the proxy")
			return nil
		}
		if req.Method == http.MethodConnect {
			return p.connect(c, req)
		}
		if !req.URL.IsAbs() || req.URL.Scheme != "http" {
			writeError(c, http.StatusBadRequest, "this is a proxy: send an absolute http:// URL, or CONNECT for anything else")
			return nil
		}
		keep, err := p.forward(c, req)
		if err != nil || !keep {
			return err
		}
	}
}

func (p *httpProxy) authorized(req *http.Request) bool {
	h := req.Header.Get("Proxy-Authorization")
	raw, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return false
	}
	user, pass, _ := strings.Cut(string(dec), ":")
	return p.s.checkAuth(user, pass)
}

// connect opens a tunnel to req.Host and relays it.
func (p *httpProxy) connect(c *peekedConn, req *http.Request) error {
	p.s.requests.HTTPConnect.Add(1)
	target, err := p.s.dialName(p.s.ctx, "tcp", req.Host)
	if err != nil {
		writeError(c, dialStatus(err), err.Error())
		return fmt.Errorf("http CONNECT %s: %w", req.Host, err)
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		target.Close()
		return err
	}
	conn, rest := c.detach(nil)
	p.s.relay(c, conn, rest, target)
	return nil
}

// hopHeaders are meaningful only between the client and the proxy (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

// forward sends an absolute-URI request on and copies the response back; keep reports whether the
// client connection may carry another request.
func (p *httpProxy) forward(c *peekedConn, req *http.Request) (keep bool, err error) {
	p.s.requests.HTTP.Add(1)
	out := req.Clone(p.s.ctx)
	out.RequestURI = ""
	for _, h := range strings.Split(req.Header.Get("Connection"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			out.Header.Del(h)
		}
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		writeError(c, dialStatus(err), err.Error())
		return false, fmt.Errorf("http forward %s: %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	if err := resp.Write(c); err != nil {
		return false, err
	}
	return !req.Close && !resp.Close, nil
}

// dialStatus maps a dial error to an HTTP status for the client.
func dialStatus(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotAllowed):
		return http.StatusForbidden
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func errorResponse(status int, msg string) *http.Response {
	body := msg + "\n"
	return &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(strings.NewReader(body)),
	}
}

func writeError(w io.Writer, status int, msg string) {
	resp := errorResponse(status, msg)
	resp.Close = true
	resp.Write(w)
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
