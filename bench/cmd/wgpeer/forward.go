package main

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// forwardTCP accepts connections on ln (a netstack port) and joins each to a new TCP connection to
// target, the way wireproxy's TCPServerTunnel hands a tunnel's connections to a local service: one
// goroutine per direction copying with io.Copy, half-closing the other side at EOF.
func forwardTCP(ln net.Listener, target string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(t, c)
				t.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			io.Copy(c, t)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			<-done
		}()
	}
}

// udpIdle is how long a forwarded UDP association lives without an answer from the target.
const udpIdle = time.Minute

// forwardUDP relays datagrams between clients of uc (a netstack UDP port) and target: each client
// address gets a UDP socket of its own connected to target, and what target answers on it goes
// back to that client, as wireproxy's UDP tunnels do.
func forwardUDP(uc net.PacketConn, target string) error {
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	assoc := map[netip.AddrPort]*net.UDPConn{}
	buf := make([]byte, 65535)
	for {
		n, from, err := uc.ReadFrom(buf)
		if err != nil {
			return err
		}
		ap := from.(*net.UDPAddr).AddrPort()
		mu.Lock()
		out, ok := assoc[ap]
		if !ok {
			if out, err = net.DialUDP("udp", nil, raddr); err != nil {
				mu.Unlock()
				continue
			}
			assoc[ap] = out
			go func() { // target → client until the association is idle
				defer func() {
					mu.Lock()
					delete(assoc, ap)
					mu.Unlock()
					out.Close()
				}()
				b := make([]byte, 65535)
				for {
					out.SetReadDeadline(time.Now().Add(udpIdle))
					m, err := out.Read(b)
					if err != nil {
						return // idle, or closed
					}
					uc.WriteTo(b[:m], from)
				}
			}()
		}
		mu.Unlock()
		out.Write(buf[:n])
	}
}
