package loadtest_test

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-net/warren/coord"
	"github.com/warren-net/warren/coord/loadtest"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
)

// startCoord runs a coordination server in this process on a real SQLite file and loopback UDP.
func startCoord(t testing.TB) (addr string, srv *coord.Server, st *store.Store) {
	t.Helper()
	pools := store.Pools{V4: netip.MustParsePrefix("100.64.0.0/10"), V6: netip.MustParsePrefix("fd7a:7761:7272::/48")}
	st, err := store.Open(filepath.Join(t.TempDir(), "w.db"), pools)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = coord.New(coord.Config{Key: key, Store: st, Pools: pools, Conn: pc, LoginTimeout: 30 * time.Second,
		Logger: testkit.Logger(t, "coord")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); st.Close() })
	return identity.PinnedAddr(srv.Addr().String(), key.Fingerprint()), srv, st
}

// TestRunMeasures: a small run against a real server logs every node in, times every event at every
// peer, churns, idles, and leaves no node behind (they are ephemeral and log out).
func TestRunMeasures(t *testing.T) {
	addr, _, st := startCoord(t)
	const idle = time.Second
	start := time.Now()
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Coords: []string{addr}, Nodes: 41, NetworksOf: 8, Events: 20, EventRate: 200,
		Churn: 20, ChurnFor: 500 * time.Millisecond, Idle: idle, Concurrency: 16, Sockets: 4,
		Log: testkit.Logger(t, "loadtest"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < idle {
		t.Errorf("the run took %v, less than its idle phase of %v", took, idle)
	}
	t.Logf("%+v", res)
	// 41 nodes in networks of 8: five of 8, and the 41st folded into the fifth (no network of one).
	if res.Nodes != 41 || res.Networks != 5 {
		t.Errorf("nodes %d networks %d, want 41 and 5", res.Nodes, res.Networks)
	}
	if res.FanoutEvents != 20 || res.FanoutMissed != 0 || res.FanoutSamples < 20*7 {
		t.Errorf("fan-out: %d events, %d samples, %d missed; want 20, at least 140, 0", res.FanoutEvents, res.FanoutSamples, res.FanoutMissed)
	}
	if res.FanoutP50Ms <= 0 || res.FanoutP99Ms < res.FanoutP50Ms || res.FanoutMaxMs < res.FanoutP99Ms {
		t.Errorf("fan-out percentiles out of order: p50 %v p99 %v max %v", res.FanoutP50Ms, res.FanoutP99Ms, res.FanoutMaxMs)
	}
	if res.ChurnLogins == 0 || res.ChurnFailures != 0 {
		t.Errorf("churn: %d logins, %d failures", res.ChurnLogins, res.ChurnFailures)
	}
	if len(res.Servers) != 1 || res.Servers[0].RSSMiB <= 0 || res.Servers[0].CPUSeconds <= 0 || res.Servers[0].IdleCPUMicros < 0 {
		t.Errorf("server stats of this process (the coord runs in it): %+v", res.Servers)
	}
	// The nodes were ephemeral and logged out: the server removed them.
	testkit.Eventually(t, 30*time.Second, func() bool {
		nodes, err := st.AllNodes(context.Background())
		return err == nil && len(nodes) == 0
	}, "the load test's nodes are removed after logout")
}

// TestBytesPerEventIndependentOfNetworkSize: what a peer receives for one peer's endpoint change
// is a delta of that peer, whatever the size of the network (O(change), not O(network)).
func TestBytesPerEventIndependentOfNetworkSize(t *testing.T) {
	per := map[int]float64{}
	for _, size := range []int{4, 40} {
		addr, _, _ := startCoord(t)
		res, err := loadtest.Run(context.Background(), loadtest.Config{
			Coords: []string{addr}, Nodes: 40, NetworksOf: size, Events: 20, EventRate: 200, Concurrency: 16, Sockets: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.FanoutMissed != 0 {
			t.Fatalf("networks of %d: %d events missed", size, res.FanoutMissed)
		}
		per[size] = res.BytesPerPeerEvent
		t.Logf("networks of %d: %v bytes per peer per event", size, res.BytesPerPeerEvent)
	}
	if per[4] <= 0 || per[40] > 1.5*per[4] || per[40] > 2048 {
		t.Errorf("bytes per peer per event: %v in networks of 4, %v in networks of 40; want about the same, under 2 KiB", per[4], per[40])
	}
}
