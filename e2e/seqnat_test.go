package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// TestSequentialNATDrift: port prediction against a sequential NAT that another host behind it keeps
// busy. A port-restricted node (pr) and a node behind a sequential NAT (sq) start; after sq's NAT
// discovery reported its last port L, a second client behind the same NAT opens 1100 mappings, so the
// NAT's counter stands past the 1024 ports a spray covers when the two meet. The first attempt sprays
// upwards from L and misses sq's sockets; afterwards sq measures its counter again and
// reports it (peer.Config.OnPortsUsed), so the next attempt (15 s later, the birthday schedule) finds
// them: the pair ends direct, and sq's reported last port has moved.
func TestSequentialNATDrift(t *testing.T) {
	lab := newNetlab(t, "pr:port", "sq:sequential:2")
	tmp := t.TempDir()
	coord := startNSProc(t, lab.coord.NS, "warren-coord", "--listen", netip.AddrPortFrom(lab.coord.addr(), 7400).String(), "--data", filepath.Join(tmp, "coord"))
	coordAddr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	type node struct{ name, ns, state string }
	pr := node{"pr", lab.site(t, "pr").Clients[0].NS, filepath.Join(tmp, "pr")}
	sq := node{"sq", lab.site(t, "sq").Clients[0].NS, filepath.Join(tmp, "sq")}
	for _, n := range []node{pr, sq} {
		startNSProc(t, n.ns, "warren", "up", "--coord", coordAddr, "--coord-key", fp, "--state", n.state, "--name", n.name,
			"--socks", "127.0.0.1:1080", "--log-level", "debug")
	}
	for _, n := range []node{pr, sq} {
		waitLoggedIn(t, n.state)
	}
	var last uint16
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, err := cliStatus(sq.state)
		if err == nil && st.Self.NAT != nil && st.Self.NAT.Allocation == "sequential" {
			last = st.Self.NAT.LastPort
		}
		return last != 0
	}, "sq's NAT discovery never reported a sequential NAT")

	// The neighbour: 1100 new mappings, one per destination port, from one socket.
	noise := labUDP(t, lab.site(t, "sq").Clients[1].NS, "0.0.0.0:0")
	for i := range 1100 {
		sendUDP(t, noise, netip.AddrPortFrom(lab.coord.addr(), uint16(10000+i)), "x")
	}
	warren(t, true, "network", "create", "lab", "--state", pr.state, "--password", "pw")
	warren(t, true, "network", "join", "lab", "--state", sq.state, "--password", "pw")
	start := time.Now()

	var path string
	var now uint16
	testkit.Eventually(t, 60*time.Second, func() bool {
		a, errA := cliStatus(pr.state)
		b, errB := cliStatus(sq.state)
		if errA != nil || errB != nil || b.Self.NAT == nil {
			return false
		}
		path, now = fmt.Sprintf("%s/%s", peerPath(a, "sq"), peerPath(b, "pr")), b.Self.NAT.LastPort
		return path == "direct/direct"
	}, "pr ↔ sq never went direct (path %s, sq's last port %v, was %d)", later(func() any { return path }),
		later(func() any { return now }), last)
	t.Logf("pr ↔ sq direct %v after they met; sq's reported last port %d → %d", time.Since(start).Round(time.Millisecond), last, now)
	if now == last {
		t.Errorf("sq's last port is still %d: it was never measured again", last)
	}
}
