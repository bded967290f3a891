package testkit

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ConnectProxy is a minimal HTTP CONNECT proxy with basic auth, as curl and git use one: tests run
// it where a network allows only an outbound proxy.
type ConnectProxy struct {
	// Tunnels counts the CONNECTs it let through; Refused the ones it answered 407 (bad credentials).
	Tunnels, Refused atomic.Int64
}

// StartConnectProxy serves CONNECT on ln, requiring user and password, until the test ends; dial
// opens the upstream connections (nil = net.Dialer). Each tunnel copies both ways until either side
// closes.
func StartConnectProxy(t testing.TB, ln net.Listener, user, password string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *ConnectProxy {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	p := &ConnectProxy{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(c, false)
				defer c.Close()
				p.serve(c, user, password, dial, track)
			}()
		}
	}()
	return p
}

func (p *ConnectProxy) serve(c net.Conn, user, password string, dial func(ctx context.Context, network, addr string) (net.Conn, error), track func(net.Conn, bool)) {
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	c.SetReadDeadline(time.Time{})
	auth := &http.Request{Header: http.Header{"Authorization": req.Header["Proxy-Authorization"]}}
	if u, pw, ok := auth.BasicAuth(); !ok || u != user || pw != password {
		p.Refused.Add(1)
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := dial(ctx, "tcp", req.Host)
	cancel()
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	track(up, true)
	defer track(up, false)
	defer up.Close()
	p.Tunnels.Add(1)
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		io.Copy(up, br)
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	up.Close()
	<-done
}
