package socks

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// webServer serves "hello <path>" on 127.0.0.1.
func webServer(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Proxy-Authorization") != "" {
			http.Error(w, "proxy credentials leaked", 500)
			return
		}
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func proxyClient(proxy string, user *url.Userinfo) *http.Client {
	u := &url.URL{Scheme: "http", Host: proxy, User: user}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPProxyForwardAndConnect(t *testing.T) {
	web := webServer(t)
	_, proxy := startServer(t, map[string]netip.Addr{"b.warren": web.Addr()}, 0)
	c := proxyClient(proxy, nil)
	// Absolute-URI forwarding by overlay name, twice on one kept-alive connection.
	for _, path := range []string{"/one", "/two"} {
		if code, body := get(t, c, fmt.Sprintf("http://b.warren:%d%s", web.Port(), path)); code != 200 || body != "hello "+path {
			t.Fatalf("forward %s: %d %q", path, code, body)
		}
	}
	// Unknown names are a gateway error, not a DNS query.
	if code, _ := get(t, c, fmt.Sprintf("http://nobody.warren:%d/", web.Port())); code != http.StatusBadGateway {
		t.Errorf("unknown name: %d", code)
	}
	// CONNECT tunnels bytes.
	conn, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT b.warren:%d HTTP/1.1\r\nHost: b.warren:%d\r\n\r\nGET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", web.Port(), web.Port())
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(inner.Body)
	if string(b) != "hello /tunnel" {
		t.Errorf("through the tunnel: %q", b)
	}
	// The local API's name is refused.
	if code, _ := get(t, c, "http://local.warren/v1/status"); code != http.StatusForbidden {
		t.Errorf("local.warren: %d", code)
	}
	// Relative URLs are not proxy requests.
	raw, _ := net.Dial("tcp", proxy)
	defer raw.Close()
	io.WriteString(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(raw), nil); err != nil || resp.StatusCode != 400 {
		t.Errorf("relative URL: %v %v", resp, err)
	}
	// Oversized headers get 431 instead of unbounded memory.
	big, _ := net.Dial("tcp", proxy)
	defer big.Close()
	go io.WriteString(big, "GET http://b.warren/ HTTP/1.1\r\nX: "+strings.Repeat("a", 100<<10)+"\r\n\r\n")
	big.SetDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(big), nil); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %v %v", resp, err)
	}
}

func TestAuth(t *testing.T) {
	web := webServer(t)
	s, err := New(Config{
		Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, n, a)
		},
		Resolve: func(context.Context, string) (netip.Addr, error) { return web.Addr(), nil },
		User:    "alice", Password: "s3cret",
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	proxy := ln.Addr().String()
	url := fmt.Sprintf("http://b.warren:%d/x", web.Port())

	if code, _ := get(t, proxyClient(proxy, nil), url); code != http.StatusProxyAuthRequired {
		t.Errorf("HTTP without credentials: %d", code)
	}
	if code, _ := get(t, proxyClient(proxy, url_("alice", "wrong")), url); code != http.StatusProxyAuthRequired {
		t.Errorf("HTTP with a wrong password: %d", code)
	}
	if code, body := get(t, proxyClient(proxy, url_("alice", "s3cret")), url); code != 200 || body != "hello /x" {
		t.Errorf("HTTP with credentials: %d %q", code, body)
	}

	// SOCKS5: no-auth is not offered; username/password works.
	c, _ := net.Dial("tcp", proxy)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	io.ReadFull(c, m[:])
	if m[1] != 0xff {
		t.Errorf("no-auth method accepted: %v", m)
	}
	for pass, want := range map[string]byte{"wrong": 1, "s3cret": 0} {
		c, _ := net.Dial("tcp", proxy)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte{5, 1, 2, 1, 5}
		msg = append(msg, "alice"...)
		msg = append(msg, byte(len(pass)))
		msg = append(msg, pass...)
		c.Write(msg)
		var r [4]byte
		io.ReadFull(c, r[:])
		if r[1] != 2 || r[3] != want {
			t.Errorf("password %q: reply %v", pass, r)
		}
	}
}

func url_(user, pass string) *url.Userinfo { return url.UserPassword(user, pass) }

// TestAuthHoldsNoSlot: a client without credentials cannot keep a connection: one that promises a
// body and goes silent is closed at the handshake deadline, and one that keeps sending requests
// without credentials is closed after maxAuthFailures of them. Both would otherwise hold one of the
// proxy's MaxConns slots for as long as they liked.
func TestAuthHoldsNoSlot(t *testing.T) {
	s, err := New(Config{
		Dial:             func(context.Context, string, string) (net.Conn, error) { return nil, fmt.Errorf("no dials here") },
		Resolve:          func(context.Context, string) (netip.Addr, error) { return netip.Addr{}, fmt.Errorf("no names here") },
		User:             "alice",
		Password:         "s3cret",
		HandshakeTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()

	closedWithin := func(t *testing.T, c net.Conn, within time.Duration) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(within))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("the proxy kept the connection open: %v", err)
		}
	}
	t.Run("silent body", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST http://b.warren/ HTTP/1.1\r\nHost: b.warren\r\nContent-Length: 1000\r\n\r\n")
		closedWithin(t, c, 10*time.Second) // the handshake deadline is 300 ms; 10 s is a safety net
	})
	t.Run("requests without credentials", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for i := range maxAuthFailures {
			io.WriteString(c, "GET http://b.warren/ HTTP/1.1\r\nHost: b.warren\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
				t.Fatalf("request %d: %v %v", i+1, resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			if last := i == maxAuthFailures-1; resp.Close != last {
				t.Errorf("request %d: Connection: close is %v, want %v", i+1, resp.Close, last)
			}
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := br.Read(make([]byte, 1)); err == nil {
			t.Fatalf("the proxy kept the connection open after %d failures (read %d bytes)", maxAuthFailures, n)
		}
	})
}
