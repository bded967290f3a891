package node

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/socks"
)

// proxyServer is the node's local proxy: one socks.Server (SOCKS5 and HTTP) on the Config.SOCKS
// address and the extra Config.HTTP address, and the goroutines serving them. Its listeners are
// fixed once startProxy returns; close is the only method that changes anything.
type proxyServer struct {
	srv             *socks.Server
	socksLn, httpLn net.Listener // nil when not configured
	wg              sync.WaitGroup
}

// proxyListen says where the proxy listens and whom it serves.
type proxyListen struct {
	socks, http string                          // TCP addresses; "" = not that one
	socket      string                          // a unix socket path for the same proxy
	guard       func(net.Listener) net.Listener // wraps each listener: who may connect
}

// startProxy listens where w says and serves c on every listener. On error the returned
// proxyServer, if not nil, holds what was started and must be closed.
func startProxy(w proxyListen, c socks.Config, log hclog.Logger) (*proxyServer, error) {
	srv, err := socks.New(c)
	if err != nil {
		return nil, err
	}
	p := &proxyServer{srv: srv}
	serve := func(ln net.Listener) {
		if w.guard != nil {
			ln = w.guard(ln)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("proxy stopped", "error", err)
			}
		}()
	}
	for _, addr := range []string{w.socks, w.http} {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return p, fmt.Errorf("proxy listener: %w", err)
		}
		if addr == w.socks {
			p.socksLn = ln
		} else {
			p.httpLn = ln
		}
		serve(ln)
		log.Info("proxy listening (SOCKS5 and HTTP)", "addr", ln.Addr().String(), "auth", c.User != "")
	}
	if w.socket != "" {
		ln, err := listenUnix(w.socket)
		if err != nil {
			return p, fmt.Errorf("proxy socket: %w", err)
		}
		serve(ln)
		log.Info("proxy listening (SOCKS5 and HTTP)", "socket", w.socket)
	}
	return p, nil
}

// listenUnix listens on a unix socket at path that only its owner may use, replacing a stale one.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
		os.Remove(path) // left by a crash
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// close stops the listeners and every proxied connection, and waits for them.
func (p *proxyServer) close() {
	p.srv.Close()
	p.wg.Wait()
}

// addr returns ln's address, or nil.
func addr(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}
