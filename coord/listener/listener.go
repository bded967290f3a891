// Package listener is the QUIC lifecycle the coordination server and the standalone relay share: one
// UDP socket serving the server's identity under one ALPN, connections admitted through an
// abuse.Pending, an accept loop, periodic jobs, and every goroutine of them owned until Close, which
// tears down in one order. It knows nothing of what the connections say: each server's own code
// serves them.
package listener

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/tcptun"
)

// Config configures a Listener. All fields but MaxStreams are required.
type Config struct {
	// Key is the server's identity, presented in the TLS handshake; clients pin its fingerprint.
	Key *identity.Key
	// ALPN is the protocol the server speaks (control.ALPN, control.RelayALPN).
	ALPN string
	// ResetLabel derives the stateless reset key from Key ("coord", "relay"): a key stable across
	// restarts, so a restarted server answers the packets of connections it lost with stateless
	// resets and a client reconnects as soon as it sends one instead of after its idle timeout.
	// quic-go answers only packets over 42 bytes: a request or an endpoint update, not a bare
	// keep-alive.
	ResetLabel string
	// Conn is the UDP socket to serve on. Close closes it.
	Conn net.PacketConn
	// Pending admits new connections: it bounds the connections not logged in yet and asks for a
	// QUIC Retry under pressure. The server calls its Done once a connection has logged in.
	Pending *abuse.Pending
	// IdleTimeout is how long a silent connection stays open.
	IdleTimeout time.Duration
	// MaxStreams bounds the bidirectional streams a client may open (0 = quic-go's default).
	MaxStreams int64
	// TCP, if set, is a second packet socket served exactly like Conn: the framed TLS streams of
	// clients whose UDP is blocked (a *tcptun.Server, whose synthetic addresses tell its clients
	// apart). Close closes it.
	TCP net.PacketConn
}

// Listener is a server's QUIC socket and the goroutines that serve it. Its methods are safe for
// concurrent use; Go, Every and Serve must not be called after Close.
type Listener struct {
	conn   net.PacketConn
	tr     *quic.Transport
	ln     *quic.Listener
	tcp    net.PacketConn  // nil without TCP
	tcpTr  *quic.Transport // QUIC over tcp
	tcpLn  *quic.Listener
	ctx    context.Context // alive until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the goroutines started by Go, Every and Serve

	closeOnce sync.Once
	closeErr  error
}

// Listen starts listening on cfg.Conn. Connections handshake from now on, but none is accepted
// until Serve.
func Listen(cfg Config) (*Listener, error) {
	tlsConf, err := identity.TLSConfig(cfg.Key, cfg.ALPN, true, func(ed25519.PublicKey) error { return nil })
	if err != nil {
		return nil, err
	}
	resetKey := quic.StatelessResetKey(cfg.Key.StatelessResetKey(cfg.ResetLabel))
	l := &Listener{conn: cfg.Conn}
	l.tr = &quic.Transport{Conn: cfg.Conn, StatelessResetKey: &resetKey,
		ConnContext: cfg.Pending.Admit, VerifySourceAddress: cfg.Pending.UnderPressure}
	qconf := &quic.Config{
		HandshakeIdleTimeout:  5 * time.Second,
		MaxIdleTimeout:        cfg.IdleTimeout,
		MaxIncomingStreams:    cfg.MaxStreams,
		MaxIncomingUniStreams: -1,
	}
	l.ln, err = l.tr.Listen(tlsConf, qconf)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.TCP != nil {
		// Its own transport (and stateless reset key: see peer.New for why one key per transport).
		tcpKey := quic.StatelessResetKey(cfg.Key.StatelessResetKey(cfg.ResetLabel + " tcp"))
		l.tcp = cfg.TCP
		l.tcpTr = &quic.Transport{Conn: cfg.TCP, StatelessResetKey: &tcpKey,
			ConnContext: cfg.Pending.Admit, VerifySourceAddress: cfg.Pending.UnderPressure}
		if l.tcpLn, err = l.tcpTr.Listen(tlsConf, qconf); err != nil {
			l.ln.Close()
			return nil, fmt.Errorf("listen on tcp: %w", err)
		}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// Context returns a context that is cancelled when Close begins: sessions and jobs watch it.
func (l *Listener) Context() context.Context { return l.ctx }

// Transport returns the QUIC transport on the UDP socket, which also reads and writes the socket's
// non-QUIC packets (the side channel).
func (l *Listener) Transport() *quic.Transport { return l.tr }

// Side is one socket's side channel: it reads that socket's non-QUIC packets and writes to any
// client, UDP or TCP, by its address.
type Side struct {
	read       *quic.Transport
	udp, tcpTr *quic.Transport
}

// ReadNonQUICPacket reads the next non-QUIC packet of this side's socket.
func (s Side) ReadNonQUICPacket(ctx context.Context, b []byte) (int, net.Addr, error) {
	return s.read.ReadNonQUICPacket(ctx, b)
}

// WriteTo sends b to addr: over its TCP stream if addr is synthetic (tcptun.IsSynthetic), else on
// the UDP socket.
func (s Side) WriteTo(b []byte, addr net.Addr) (int, error) {
	if s.tcpTr != nil {
		if ua, ok := addr.(*net.UDPAddr); ok && tcptun.IsSynthetic(ua.AddrPort().Addr()) {
			return s.tcpTr.WriteTo(b, addr)
		}
	}
	return s.udp.WriteTo(b, addr)
}

// Sides returns the side channels to serve, one per socket (UDP, and TCP if configured); each writes
// to clients of both.
func (l *Listener) Sides() []Side {
	sides := []Side{{read: l.tr, udp: l.tr, tcpTr: l.tcpTr}}
	if l.tcpTr != nil {
		sides = append(sides, Side{read: l.tcpTr, udp: l.tr, tcpTr: l.tcpTr})
	}
	return sides
}

// Addr returns the UDP address the server listens on.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Go runs f in a goroutine the Listener owns: Close waits for it, so f must return once Context is
// done (or, for a loop reading a socket of its own, once the server has closed that socket).
func (l *Listener) Go(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// Every runs f every d, in a goroutine the Listener owns, until Close.
func (l *Listener) Every(d time.Duration, f func()) {
	l.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	})
}

// Serve accepts connections until Close, each served by serve in a goroutine of its own that the
// Listener owns. serve must return once Context is done.
func (l *Listener) Serve(serve func(*quic.Conn)) {
	accept := func(ln *quic.Listener) {
		for {
			conn, err := ln.Accept(l.ctx)
			if err != nil {
				return
			}
			l.Go(func() { serve(conn) })
		}
	}
	l.Go(func() { accept(l.ln) })
	if l.tcpLn != nil {
		l.Go(func() { accept(l.tcpLn) })
	}
}

// Close cancels Context, stops accepting, waits for every goroutine the Listener started, then
// closes the transport and the socket. Idempotent; it returns the transport's error.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel() // ends the sessions and jobs: they watch l.ctx
		l.ln.Close()
		if l.tcpLn != nil {
			l.tcpLn.Close()
		}
		l.wg.Wait()
		l.closeErr = l.tr.Close()
		l.conn.Close()
		if l.tcpTr != nil {
			l.tcpTr.Close()
			l.tcp.Close()
		}
	})
	return l.closeErr
}
