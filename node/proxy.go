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
// address, the extra Config.HTTP address and the unix socket, and the goroutines serving them. Its
// listeners are bound by listenProxy, before the node logs in (a port in use fails the start before
// the coord registers anything), and served by serve once the node is up; close is the only method
// that changes anything afterwards.
type proxyServer struct {
	srv                     *socks.Server // nil until serve
	socksLn, httpLn, unixLn net.Listener  // nil when not configured
	socket                  string        // unixLn's path
	wg                      sync.WaitGroup
}

// proxyListen says where the proxy listens and whom it serves.
type proxyListen struct {
	socks, http string // TCP addresses; "" = not that one
	socket      string // a unix socket path for the same proxy
}

// listenProxy binds the listeners w names. On error the returned proxyServer, if not nil, holds
// what was bound and must be closed.
func listenProxy(w proxyListen) (*proxyServer, error) {
	p := &proxyServer{socket: w.socket}
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
	}
	if w.socket != "" {
		ln, err := listenUnix(w.socket)
		if err != nil {
			return p, fmt.Errorf("proxy socket: %w", err)
		}
		p.unixLn = ln
	}
	return p, nil
}

// serve serves c on every listener, each wrapped by guard (if not nil).
func (p *proxyServer) serve(c socks.Config, guard func(net.Listener) net.Listener, log hclog.Logger) error {
	srv, err := socks.New(c)
	if err != nil {
		return err
	}
	p.srv = srv
	for _, ln := range []net.Listener{p.socksLn, p.httpLn, p.unixLn} {
		if ln == nil {
			continue
		}
		if ln == p.unixLn {
			log.Info("proxy listening (SOCKS5 and HTTP)", "socket", p.socket)
		} else {
			log.Info("proxy listening (SOCKS5 and HTTP)", "addr", ln.Addr().String(), "auth", c.User != "")
		}
		if guard != nil {
			ln = guard(ln)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("proxy stopped", "error", err)
			}
		}()
	}
	return nil
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
	if p.srv != nil {
		p.srv.Close()
	}
	for _, ln := range []net.Listener{p.socksLn, p.httpLn, p.unixLn} {
		if ln != nil {
			ln.Close() // not served yet, or already closed by srv.Close (then this does nothing)
		}
	}
	p.wg.Wait()
}

// addr returns ln's address, or nil.
func addr(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}
