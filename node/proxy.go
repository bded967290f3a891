package node

import (
	"fmt"
	"net"
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

// startProxy listens on socksAddr and httpAddr ("" = not that one) and serves c on both. On error
// the returned proxyServer, if not nil, holds what was started and must be closed.
func startProxy(socksAddr, httpAddr string, c socks.Config, log hclog.Logger) (*proxyServer, error) {
	srv, err := socks.New(c)
	if err != nil {
		return nil, err
	}
	p := &proxyServer{srv: srv}
	for _, addr := range []string{socksAddr, httpAddr} {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return p, fmt.Errorf("proxy listener: %w", err)
		}
		if addr == socksAddr {
			p.socksLn = ln
		} else {
			p.httpLn = ln
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("proxy stopped", "error", err)
			}
		}()
		log.Info("proxy listening (SOCKS5 and HTTP)", "addr", ln.Addr().String(), "auth", c.User != "")
	}
	return p, nil
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
