package coord

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// TestAddrWatch: followAddrs looks at a session for addrWatchFor after its node sent, at every
// session every addrScanEvery, and at every session on the tick after the relay dropped frames from
// an unknown address; otherwise at none.
func TestAddrWatch(t *testing.T) {
	w := newAddrWatch()
	if w.watchFor < 2 || w.watchFor+2 >= w.scanIn {
		t.Fatalf("watchFor %d, scanIn %d ticks: the test below needs 2 <= watchFor < scanIn-2", w.watchFor, w.scanIn)
	}
	a, b := &session{}, &session{}
	for tick := 1; tick < w.scanIn; tick++ {
		if all, some := w.next(0); all || len(some) != 0 {
			t.Fatalf("idle tick %d: all %v, some %d; want none", tick, all, len(some))
		}
	}
	if all, _ := w.next(0); !all {
		t.Fatalf("tick %d (addrScanEvery): want every session", w.scanIn)
	}

	w.sent(a)
	for i := range w.watchFor {
		if all, some := w.next(0); all || !slices.Equal(some, []*session{a}) {
			t.Fatalf("tick %d after a's message: all %v, some %v; want a alone", i+1, all, some)
		}
	}
	if all, some := w.next(0); all || len(some) != 0 {
		t.Fatalf("after a's watch: all %v, some %d; want none", all, len(some))
	}
	w.sent(a)
	w.sent(b)
	if all, some := w.next(0); all || len(some) != 2 || !slices.Contains(some, a) || !slices.Contains(some, b) {
		t.Fatalf("after a's and b's messages: all %v, some %v; want a and b", all, some)
	}

	w = newAddrWatch()
	if all, _ := w.next(7); !all {
		t.Fatal("the relay dropped frames from an unknown source: want every session")
	}
	if all, _ := w.next(7); all {
		t.Fatal("no new drops: want no look at every session")
	}
}

// TestFollowAddrsAfterMigration: a node's control connection moves to a new socket (as when its NAT
// maps it anew) and the node reports its endpoints; the coord follows it to the new address because
// the node sent something, not on a look at every session.
func TestFollowAddrsAfterMigration(t *testing.T) {
	srv := startServer(t)
	srv.addrWatch.mu.Lock()
	srv.addrWatch.scanIn = 1 << 30 // no look at every session: only the node's message makes it look
	srv.addrWatch.mu.Unlock()
	key, _ := identity.Generate()
	tlsConf, _ := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	udp := func() *net.UDPConn {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	pc1, pc2 := udp(), udp()
	tr1, tr2 := &quic.Transport{Conn: pc1}, &quic.Transport{Conn: pc2}
	t.Cleanup(func() { tr1.Close(); tr2.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, err := tr1.Dial(ctx, srv.Addr(), tlsConf, clientQUIC())
	if err != nil {
		t.Fatal(err)
	}
	c := openControl(t, ctx, conn)
	c.login(t, "mover")
	observed := func() netip.AddrPort { return srv.Online()[string(key.Public())].Observed }
	if got, want := observed(), pc1.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
		t.Fatalf("observed at login: %v, want %v", got, want)
	}

	path, err := conn.AddPath(tr2)
	if err != nil {
		t.Fatal(err)
	}
	if err := path.Probe(ctx); err != nil {
		t.Fatalf("probe the new path: %v", err)
	}
	if err := path.Switch(); err != nil {
		t.Fatalf("switch to the new path: %v", err)
	}
	c.send(t, &control.Msg{Type: control.TypeEndpoints, Endpoints: &control.Endpoints{
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}})
	want := pc2.LocalAddr().(*net.UDPAddr).AddrPort()
	// ioTimeout is a safety net: it takes about one addrCheckEvery.
	testkit.Eventually(t, ioTimeout, func() bool { return observed() == want }, "the coord never followed the node to %v", want)
}
