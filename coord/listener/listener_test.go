package listener

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/coord/abuse"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// TestListenerLifecycle: Serve hands each accepted connection to serve, Every ticks, Go runs, and
// Close stops all of them — none outlives it — closes the socket, and may be called again.
func TestListenerLifecycle(t *testing.T) {
	defer testkit.VerifyNone(t)()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pending := abuse.NewPending(8, func(netip.Addr) (netip.Prefix, bool) { return netip.Prefix{}, false })
	l, err := Listen(Config{Key: key, ALPN: "test", ResetLabel: "test", Conn: pc, Pending: pending, IdleTimeout: 5 * time.Second, MaxStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{}, 1)
	l.Serve(func(c *quic.Conn) {
		pending.Done(c)
		served <- struct{}{}
		<-l.Context().Done()
		c.CloseWithError(0, "")
	})
	ticks := make(chan struct{}, 1)
	l.Every(time.Millisecond, func() {
		select {
		case ticks <- struct{}{}:
		default:
		}
	})
	ran := make(chan struct{})
	l.Go(func() {
		close(ran)
		<-l.Context().Done()
	})

	clientKey, _ := identity.Generate()
	tlsConf, err := identity.TLSConfig(clientKey, "test", false, func(ed25519.PublicKey) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, l.Addr().String(), tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	for name, ch := range map[string]<-chan struct{}{"serve": served, "Every": ticks, "Go": ran} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s never ran", name)
		}
	}

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if l.Context().Err() == nil {
		t.Error("Context alive after Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); err == nil {
		t.Error("the socket is still open after Close")
	}
}
