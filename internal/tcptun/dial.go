package tcptun

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// ProxyFromEnvironment returns the HTTP proxy HTTPS_PROXY (or https_proxy) names for a TLS connection
// to addr, honouring NO_PROXY as curl and git do; nil = none. (Like net/http, it never proxies
// localhost.)
func ProxyFromEnvironment(addr string) (*url.URL, error) {
	return http.ProxyFromEnvironment(&http.Request{URL: &url.URL{Scheme: "https", Host: addr}})
}

// Dial opens a TLS stream to addr (HOST:PORT), through the HTTP proxy if proxy is not nil (CONNECT,
// with basic auth from the URL's user:password), and checks that the server speaks ALPN. tlsConf
// carries the identity certificate and the key check; Dial sets ALPN itself.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, proxy *url.URL) (*tls.Conn, error) {
	var d net.Dialer
	var raw net.Conn
	var err error
	if proxy == nil {
		raw, err = d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("tcp %s: %w", addr, err)
		}
	} else {
		raw, err = dialProxy(ctx, &d, proxy, addr)
		if err != nil {
			return nil, err
		}
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{ALPN}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls %s: %w", addr, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != ALPN {
		tc.Close()
		return nil, fmt.Errorf("tls %s: server does not speak %s", addr, ALPN)
	}
	return tc, nil
}

// maxProxyResponse bounds the proxy's answer to CONNECT (status line and headers).
const maxProxyResponse = 16 << 10

// dialProxy opens a tunnel to addr through an HTTP proxy with CONNECT.
func dialProxy(ctx context.Context, d *net.Dialer, proxy *url.URL, addr string) (net.Conn, error) {
	if proxy.Scheme != "http" && proxy.Scheme != "" {
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported", proxy.Redacted())
	}
	host := proxy.Host
	if proxy.Port() == "" {
		host = net.JoinHostPort(proxy.Hostname(), "80")
	}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.Redacted(), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	req += "\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy %s: %w", proxy.Redacted(), err)
	}
	// Read the answer one byte at a time up to the blank line, so no byte of the tunnel is consumed.
	br := bufio.NewReaderSize(&limitedByteReader{c: c, left: maxProxyResponse}, 1)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxy.Redacted(), addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %s", proxy.Redacted(), addr, resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// limitedByteReader reads c one byte per call, at most left bytes in all.
type limitedByteReader struct {
	c    net.Conn
	left int
}

func (r *limitedByteReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, fmt.Errorf("answer longer than %d bytes", maxProxyResponse)
	}
	if len(p) > 1 {
		p = p[:1]
	}
	n, err := r.c.Read(p)
	r.left -= n
	return n, err
}
