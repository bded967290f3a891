package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// fakeRelayLink refuses every relay login and records the relay lists the set applies.
type fakeRelayLink struct {
	mu   sync.Mutex
	last []netip.AddrPort
	sets int
}

func (f *fakeRelayLink) DialControl(context.Context, netip.AddrPort, *tls.Config, *quic.Config) (*quic.Conn, error) {
	return nil, errors.New("no relay here")
}

func (f *fakeRelayLink) SetRelays(addrs []netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.sets = slices.Clone(addrs), f.sets+1
}

func (f *fakeRelayLink) relays() ([]netip.AddrPort, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.sets
}

// TestRelaySet: one login per announced relay address, kept across announcements; the coord's relay
// is used while it is offered and the coord is connected; a relay whose login is not up is not used;
// close waits for every login's goroutine.
func TestRelaySet(t *testing.T) {
	defer testkit.VerifyNone(t)()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	link := &fakeRelayLink{}
	s := newRelaySet(ctx, testkit.Logger(t, "relay"), func() [][]byte { return nil })
	s.bind(key, link)
	r1 := control.Relay{Addr: netip.MustParseAddrPort("192.0.2.1:7400"), Key: "SHA256:one"}
	r1again := control.Relay{Addr: r1.Addr, Key: "SHA256:other"} // same address: one login from one socket
	r2 := control.Relay{Addr: netip.MustParseAddrPort("192.0.2.2:7400"), Key: "SHA256:two"}
	coord := netip.MustParseAddrPort("192.0.2.9:7400")

	s.use(&control.Welcome{Relays: []control.Relay{r1, r1again, r2}, Relay: true}, coord)
	if got, _ := link.relays(); !slices.Equal(got, []netip.AddrPort{coord}) {
		t.Errorf("relays in use %v, want the coord's alone (no login is up)", got)
	}
	logins := s.logins()
	if len(logins) != 2 || logins[r1.Addr] == "" || logins[r2.Addr] == "" {
		t.Errorf("logins %v, want one each for %v and %v", logins, r1.Addr, r2.Addr)
	}
	first := s.clients[0]
	s.use(&control.Welcome{Relays: []control.Relay{r1}}, coord) // the coord stops offering its relay
	if s.clients[0] != first || len(s.clients) != 1 {
		t.Error("a relay announced again got a new login, or a dropped one kept its login")
	}
	if got, _ := link.relays(); len(got) != 0 {
		t.Errorf("relays in use %v, want none", got)
	}
	if got := s.addrs(); !slices.Equal(got, []netip.AddrPort{r1.Addr}) {
		t.Errorf("announced %v", got)
	}
	s.use(&control.Welcome{Relay: true}, coord)
	s.coordLost()
	if got, _ := link.relays(); len(got) != 0 {
		t.Errorf("relays in use after the coord was lost: %v", got)
	}
	cancel()
	s.close()
	_, sets := link.relays()
	s.use(&control.Welcome{Relays: []control.Relay{r2}, Relay: true}, coord)
	if _, after := link.relays(); after != sets || len(s.logins()) != 0 {
		t.Error("a closed set still changes the relays in use")
	}
}
