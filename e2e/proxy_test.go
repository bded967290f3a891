package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/node"
)

// TestProxyDestinations: IPv6 overlay addresses, NAME.warren (a bare name is a DNS name), the HTTP
// proxy on the SOCKS port, and the rules for destinations outside the overlay (direct by default,
// never the host itself unless allowed, nothing with overlay-only).
func TestProxyDestinations(t *testing.T) {
	port, _ := blobServer(t, 1024)
	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", port)
	local := startNodeWith(t, c, "local", func(cfg *node.Config) { cfg.AllowLocal = true })
	strict := startNodeWith(t, c, "strict", func(cfg *node.Config) { cfg.AllowLocal, cfg.OverlayOnly = true, true })
	a.network(t, "create", "lan", "")
	for _, n := range []*testNode{b, local, strict} {
		n.network(t, "join", "lan", "")
	}
	a.waitPath(t, "b", "direct")

	// IPv6: SOCKS CONNECT to b's ULA address.
	b6 := b.Status().Self.IPs[1]
	if !b6.Is6() {
		t.Fatalf("b's second address %v is not IPv6", b6)
	}
	body, _ := fetch(t, a.httpClient(t), fmt.Sprintf("http://[%s]:%d/hello", b6, port))
	if string(body) != "hello from b\n" {
		t.Errorf("over IPv6: %q", body)
	}

	// The HTTP proxy answers on the same port as SOCKS; peers go by NAME.warren.
	proxyURL := &url.URL{Scheme: "http", Host: a.SOCKSAddr().String()}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	body, _ = fetch(t, hc, fmt.Sprintf("http://b.warren:%d/hello", port))
	if string(body) != "hello from b\n" {
		t.Errorf("HTTP proxy with a peer name: %q", body)
	}
	// A bare name is a DNS name, even a peer's (a peer named "localhost" or "db" must not stand in
	// for the user's own): the overlay-only node, which asks no DNS, refuses it.
	strictURL := &url.URL{Scheme: "http", Host: strict.SOCKSAddr().String()}
	shc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(strictURL)}}
	if resp, err := shc.Get(fmt.Sprintf("http://b:%d/hello", port)); err != nil {
		t.Errorf("a bare name through the HTTP proxy: %v, want an error status", err)
	} else {
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(got), "hello from b") {
			t.Errorf("a bare name reached the peer: %d %q", resp.StatusCode, got)
		}
	}

	// The host's own loopback is refused unless allowed...
	target := fmt.Sprintf("127.0.0.1:%d", port)
	if _, err := a.socksDialer(t).DialContext(context.Background(), "tcp", target); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("loopback through the proxy: %v", err)
	}
	resp, err := hc.Get("http://" + target + "/hello")
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("loopback through the HTTP proxy: %v %v", resp, err)
	}
	// ...reached directly from the host with --allow-local...
	conn, err := local.socksDialer(t).DialContext(context.Background(), "tcp", target)
	if err != nil {
		t.Fatalf("allow-local: %v", err)
	}
	fmt.Fprint(conn, "GET /hello HTTP/1.0\r\n\r\n")
	got, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.HasSuffix(string(got), "hello from b\n") {
		t.Errorf("allow-local direct dial: %q", got)
	}
	// ...and never with --overlay-only, while the overlay still works there.
	if _, err := strict.socksDialer(t).DialContext(context.Background(), "tcp", target); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("overlay-only: %v", err)
	}
	strict.waitPath(t, "b", "direct")
	if conn, err := strict.socksDialer(t).DialContext(context.Background(), "tcp", net.JoinHostPort("b.warren", fmt.Sprint(port))); err != nil {
		t.Errorf("overlay-only node to a peer: %v", err)
	} else {
		conn.Close()
	}
}
