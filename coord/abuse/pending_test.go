package abuse

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"

	"github.com/quic-go/quic-go"
)

func clientFrom(a string) *quic.ClientInfo {
	return &quic.ClientInfo{RemoteAddr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a))}
}

// TestPending: slots are bounded overall and per address (exempt addresses only overall), come
// back when a connection ends, and Retry starts at half.
// It runs in a synctest bubble, so that it can wait for the goroutine that gives a slot back.
func TestPending(t *testing.T) { synctest.Test(t, testPending) }

func testPending(t *testing.T) {
	g, _ := NewGuard(GuardConfig{}) // loopback held to no share
	p := NewPending(8, g.Limited)
	var cancels []context.CancelFunc
	admit := func(from string) error {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		_, err := p.Admit(ctx, clientFrom(from))
		return err
	}
	for i := range 2 {
		if err := admit("192.0.2.1:1000"); err != nil {
			t.Fatalf("slot %d from one address: %v", i, err)
		}
	}
	if err := admit("192.0.2.1:1001"); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("a third slot for one address (share 8/4): %v", err)
	}
	if p.UnderPressure(nil) {
		t.Error("Retry with 2 of 8 slots taken")
	}
	for i := range 6 {
		if err := admit("127.0.0.1:2000"); err != nil { // exempt from the share
			t.Fatalf("loopback slot %d: %v", i, err)
		}
	}
	if !p.UnderPressure(nil) {
		t.Error("no Retry with every slot taken")
	}
	if err := admit("198.51.100.7:1"); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("a ninth slot: %v", err)
	}
	if n, refused := p.Counts(); n != 8 || refused != 2 {
		t.Fatalf("counts %d %d, want 8 and 2", n, refused)
	}
	cancels[0]()    // a connection from 192.0.2.1 ends
	synctest.Wait() // its context.AfterFunc has run
	if err := admit("192.0.2.1:1002"); err != nil {
		t.Fatalf("the slot did not come back: %v", err)
	}
	for _, c := range cancels {
		c()
	}
}

// TestPendingIPv6Range: the addresses of one IPv6 /64 share one address's quarter.
func TestPendingIPv6Range(t *testing.T) {
	g, _ := NewGuard(GuardConfig{})
	p := NewPending(8, g.Limited)
	ok := 0
	for i := range 8 {
		a := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), 1000)
		if _, err := p.Admit(context.Background(), clientFrom(a.String())); err == nil {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("%d slots for one /64, want its share of 2", ok)
	}
}
