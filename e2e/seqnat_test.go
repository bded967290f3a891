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
	t.Parallel() // its own lab (namespaces under a random prefix), mostly waiting on retries: overlaps the long waits
	lab := newNetlab(t, "pr:port", "sq:sequential:2")
	nodes := startSiteNodes(t, lab, "pr", "sq")
	pr, sq := nodes[0], nodes[1]
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

// TestSequentialPairRetry: two nodes behind two sequential NATs, whose first birthday attempt fails
// and whose retry must work. sq's neighbour opens 300 mappings after sq's NAT discovery, more than the
// 256 sockets the pairing covers, so the first attempt misses. Both sides measure their counters again
// and retry 15 s later (the birthday schedule), while the first spray's mappings still live in sq2's
// NAT (it keeps unanswered UDP mappings 30 s) and the retry sprays many of the same destination ports.
// Sprayed from the node's own socket, those probes reused the old mappings instead of taking the next
// ports, the prediction missed again, and the pair stayed on the relay (TestNATMatrix saw this under
// load); each spray now comes from a fresh socket. The pair must go direct on the retry.
func TestSequentialPairRetry(t *testing.T) {
	t.Parallel() // its own lab (namespaces under a random prefix), mostly waiting on retries: overlaps the long waits
	lab := newNetlab(t, "sq:sequential:2", "sq2:sequential")
	nodes := startSiteNodes(t, lab, "sq", "sq2")
	sq, sq2 := nodes[0], nodes[1]
	for _, n := range nodes {
		testkit.Eventually(t, 30*time.Second, func() bool {
			st, err := cliStatus(n.state)
			return err == nil && st.Self.NAT != nil && st.Self.NAT.Allocation == "sequential"
		}, "%s's NAT discovery never reported a sequential NAT", n.name)
	}

	// The neighbour: 300 new mappings, one per destination port, from one socket.
	noise := labUDP(t, lab.site(t, "sq").Clients[1].NS, "0.0.0.0:0")
	for i := range 300 {
		sendUDP(t, noise, netip.AddrPortFrom(lab.coord.addr(), uint16(10000+i)), "x")
	}
	warren(t, true, "network", "create", "lab", "--state", sq.state, "--password", "pw")
	warren(t, true, "network", "join", "lab", "--state", sq2.state, "--password", "pw")
	start := time.Now()

	// The retry comes about 15 s after the first attempt; the one after it 30 s later, when the first
	// sprays' mappings are gone. The deadline lies between the two.
	var path string
	testkit.Eventually(t, 40*time.Second, func() bool {
		a, errA := cliStatus(sq.state)
		b, errB := cliStatus(sq2.state)
		if errA != nil || errB != nil {
			return false
		}
		path = fmt.Sprintf("%s/%s", peerPath(a, "sq2"), peerPath(b, "sq"))
		return path == "direct/direct"
	}, "sq ↔ sq2 never went direct on the retry (path %s)", later(func() any { return path }))
	t.Logf("sq ↔ sq2 direct %v after they met", time.Since(start).Round(time.Millisecond))
}

// siteNode is a node startSiteNodes started: its name (its site's), namespace and state directory.
type siteNode struct{ name, ns, state string }

// startSiteNodes starts a coord in lab and one node, logged in, on the first client of each of sites
// (named after its site).
func startSiteNodes(t *testing.T, lab *netlab, sites ...string) []siteNode {
	t.Helper()
	tmp := t.TempDir()
	coord := startNSProc(t, lab.coord.NS, "warren-coord", "--listen", netip.AddrPortFrom(lab.coord.addr(), 7400).String(), "--data", filepath.Join(tmp, "coord"))
	coordAddr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")
	var nodes []siteNode
	for _, site := range sites {
		n := siteNode{site, lab.site(t, site).Clients[0].NS, filepath.Join(tmp, site)}
		startNSProc(t, n.ns, "warren", "up", "--coord", coordAddr, "--coord-key", fp, "--state", n.state, "--name", n.name,
			"--socks", "127.0.0.1:1080", "--log-level", "debug")
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		waitLoggedIn(t, n.state)
	}
	return nodes
}
