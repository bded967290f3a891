// Package load is the traffic both ends of every benchmark row speak: a server that either streams
// bytes to the client (bulk) or echoes what it gets (round trips, new connections), and the client
// measurements that drive it through any dial function (plain TCP, a SOCKS5 proxy, a netstack).
//
// The protocol is one mode byte sent by the client after connecting:
//
//	'D' the server writes bytes until the connection fails (the client reads and counts them);
//	'U' the server reads and discards until the connection ends (the client writes and counts);
//	'E' the server echoes everything it reads until EOF.
//
// Bulk traffic flows server → client by default so that the client counts exactly what arrived in
// its time window, without depending on half-close support in the proxies in between. An upload
// ('U') counts what the client's writes handed to its socket: up to a socket buffer more than
// arrived, a few MB against the GB of a window.
package load

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Modes a client selects with its first byte.
const (
	ModeDownload = 'D'
	ModeUpload   = 'U'
	ModeEcho     = 'E'
)

// Serve accepts connections on ln until it is closed and serves each in its own goroutine. It
// returns after ln fails and every connection it accepted has ended. Close ln to stop it.
func Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(c)
		}()
	}
}

// serveConn runs one connection to its end and closes it.
func serveConn(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case ModeDownload:
		buf := make([]byte, 128<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case ModeUpload:
		buf := make([]byte, 128<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	case ModeEcho:
		// A plain loop, not io.Copy: that would hand a *net.TCPConn to itself for splicing.
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}
