package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// TestCoordFailoverOrder: a node that knows several coordination servers tries them in order,
// moving on when one cannot be reached and wrapping around; losing the current one moves on too,
// and a stale report about a server it already left changes nothing.
func TestCoordFailoverOrder(t *testing.T) {
	key, _ := identity.Generate()
	var dialed []uint16
	c := &coordClient{
		addrs: []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"},
		key:   key, pinPath: t.TempDir() + "/coord.pin", log: testkit.Logger(t, "coord"),
		dial: func(_ context.Context, ap netip.AddrPort, _ *tls.Config, _ *quic.Config) (*quic.Conn, error) {
			dialed = append(dialed, ap.Port())
			return nil, errors.New("no answer")
		},
	}
	for range 4 {
		if _, err := c.connect(context.Background()); err == nil {
			t.Fatal("connect succeeded without a server")
		}
	}
	if want := []uint16{7401, 7402, 7403, 7401}; !slices.Equal(dialed, want) {
		t.Errorf("dialed %v, want %v", dialed, want)
	}
	if got := c.current(); got != "127.0.0.1:7402" {
		t.Errorf("current %q after four failed tries, want the second server", got)
	}
	c.next("127.0.0.1:7401", errors.New("stale")) // not the current one: ignored
	if got := c.current(); got != "127.0.0.1:7402" {
		t.Errorf("a stale report moved the node to %q", got)
	}
	c.next("127.0.0.1:7402", errors.New("lost"))
	if got := c.current(); got != "127.0.0.1:7403" {
		t.Errorf("after losing the second server the node tries %q, want the third", got)
	}

	single := &coordClient{addrs: []string{"127.0.0.1:7401"}, key: key, pinPath: t.TempDir() + "/coord.pin", log: c.log, dial: c.dial}
	single.connect(context.Background())
	single.next("127.0.0.1:7401", errors.New("lost"))
	if got := single.current(); got != "127.0.0.1:7401" {
		t.Errorf("a single server became %q", got)
	}
}
