package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node/localapi"
)

// needMiniupnpd skips the test, with a reason, where miniupnpd is missing (outside CI: .ci/run
// installs miniupnpd-nftables, and under CI=true a missing one is a failure).
func needMiniupnpd(t *testing.T) {
	t.Helper()
	if !haveMiniupnpd(t) {
		t.Skip("portmap lab: needs miniupnpd (apt-get install --no-install-recommends miniupnpd-nftables)")
	}
}

// haveMiniupnpd reports whether miniupnpd is installed; under CI=true a missing one fails the test.
func haveMiniupnpd(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("miniupnpd"); err == nil {
		return true
	}
	if _, err := os.Stat("/usr/sbin/miniupnpd"); err == nil {
		return true
	}
	if os.Getenv("CI") != "" {
		t.Fatal("portmap lab: miniupnpd is not installed, but CI must run this test (.ci/run installs miniupnpd-nftables)")
	}
	return false
}

// startMiniupnpd runs miniupnpd on an upnp site's router until the test ends, and returns once it
// listens. mode is netlab.sh's: "pcp" (NAT-PMP and PCP), "upnp" (UPnP IGD only) or "all".
func startMiniupnpd(t *testing.T, lab *netlab, site, mode string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("bash", netlabScript, "miniupnpd", lab.prefix, site, dir, mode)
	out := &syncBuffer{}
	ns := lab.site(t, site).Router
	cmd.Stdout = nsWriter{t, ns}
	cmd.Stderr = io.MultiWriter(nsWriter{t, ns}, out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	testkit.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("miniupnpd on %s exited:\n%s", site, out.String())
		default:
		}
		if mode == "upnp" {
			return strings.Contains(out.String(), "HTTP listening on port")
		}
		return strings.Contains(out.String(), "Listening for NAT-PMP/PCP traffic")
	}, "miniupnpd on %s does not listen", site)
}

// TestPortMapLab: behind a random symmetric NAT that maps ports on request (miniupnpd: PCP and NAT-PMP
// on up and up2, UPnP IGD alone on uo), a node maps its UDP port, advertises the external address
// first, and ends direct with every other type of NAT (symmetric, sequential, port- and
// address-restricted, full cone, public), another such router included (issue 16 item 5). Each upnp
// node's `warren netcheck` must show the mapping and its protocol (uo: upnp); every pair with an upnp
// node must fetch both ways through SOCKS and show `direct` on both sides.
// (symmetric ↔ symmetric without a mapping is the matrix's business: relay.)
func TestPortMapLab(t *testing.T) {
	needNetlab(t)
	needMiniupnpd(t)
	lab := newNetlab(t, "up:upnp", "up2:upnp", "uo:upnp", "sy:symmetric", "sq:sequential", "pr:port", "ar:addr", "fc:fullcone", "pub:public")
	modes := map[string]string{"up": "pcp", "up2": "pcp", "uo": "upnp"}
	for s, mode := range modes {
		startMiniupnpd(t, lab, s, mode)
	}
	// The protocols netcheck must show: PCP or NAT-PMP where miniupnpd speaks them, else UPnP-IGD.
	wantProto := func(n *matrixNode, proto string) bool {
		if modes[n.name] == "upnp" {
			return proto == "upnp"
		}
		return proto == "pcp" || proto == "nat-pmp"
	}
	tmp := t.TempDir()
	coord := startNSProc(t, lab.coord.NS, "warren-coord", "--listen", netip.AddrPortFrom(lab.coord.addr(), 7400).String(), "--data", filepath.Join(tmp, "coord"))
	coordAddr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	var nodes []*matrixNode
	byName := map[string]*matrixNode{}
	for _, s := range lab.sites {
		n := newMatrixNode(t, s, s.Clients[0], s.Name, tmp)
		nodes = append(nodes, n)
		byName[n.name] = n
	}
	upnp := func(n *matrixNode) bool { return n.site.Type == "upnp" }
	for _, n := range nodes {
		args := []string{"up", "--coord", coordAddr, "--coord-key", fp, "--state", n.state, "--name", n.name,
			"--socks", "127.0.0.1:1080", "--expose", fmt.Sprintf("tcp:%d", matrixPort), "--log-level", "debug"}
		if upnp(n) {
			// TestMain sets WARREN_NO_PORTMAP for every node; these map on the lab's router.
			args = append(args, "--no-portmap=false")
		}
		n.up = time.Now()
		n.proc = startNSProc(t, n.host.NS, "warren", args...)
	}
	for _, n := range nodes {
		waitLoggedIn(t, n.state)
	}

	// The mapping first (it is the candidate endpoint peers must use), then the network.
	mapped := map[string]string{}
	for _, n := range nodes {
		if !upnp(n) {
			continue
		}
		testkit.Eventually(t, 60*time.Second, func() bool {
			st := statusOf(t, n.state)
			if st.Self.NAT == nil {
				return false
			}
			mapped[n.name] = st.Self.NAT.Portmap
			proto, _, _ := strings.Cut(st.Self.NAT.Portmap, " ")
			return wantProto(n, proto)
		}, "%s behind miniupnpd: no port mapping (last: %q)", n.name, mapped[n.name])
		t.Logf("%s: portmap %s after %v", n.name, mapped[n.name], time.Since(n.up).Round(time.Millisecond))
	}

	warren(t, true, "network", "create", "lab", "--state", nodes[0].state, "--password", "pw")
	for _, n := range nodes[1:] {
		warren(t, true, "network", "join", "lab", "--state", n.state, "--password", "pw")
	}
	t.Logf("network complete %v after the first `warren up`", time.Since(nodes[0].up).Round(time.Millisecond))

	var pairs [][2]*matrixNode
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if upnp(a) || upnp(b) {
				pairs = append(pairs, [2]*matrixNode{a, b})
			}
		}
	}
	settlePairs(t, "network complete: every pair with an upnp node direct", pairs,
		func(a, b *matrixNode) string { return "direct" }, 90*time.Second)

	// Which endpoint each peer uses for an upnp node: its mapped address, or (where the upnp node sent
	// first) the port its symmetric NAT opened towards that peer, learnt from its packets. Both are
	// direct; logged, not asserted.
	for _, p := range pairs {
		for _, sd := range [][2]*matrixNode{{p[0], p[1]}, {p[1], p[0]}} {
			a, b := sd[0], sd[1]
			if !upnp(b) {
				continue
			}
			ep := peerEndpoint(statusOf(t, a.state), b.name)
			_, ext, _ := strings.Cut(mapped[b.name], " ")
			how := "its mapped address"
			if ap, err := netip.ParseAddrPort(ep); err != nil || netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String() != ext {
				how = "not its mapped address " + ext + " (learnt from its packets)"
			}
			t.Logf("%s reaches %s at %s: %s", a.name, b.name, ep, how)
		}
	}
	for s := range modes {
		out, _ := nsExec(lab.site(t, s).Router, "nft", "list", "table", "inet", "miniupnpd")
		t.Logf("%s's router, miniupnpd's rules:\n%s", s, out)
	}

	// `warren netcheck --json` (a fresh discovery) shows the mapping, with the router's WAN address.
	for _, n := range nodes {
		if !upnp(n) {
			continue
		}
		var rep localapi.Netcheck
		out := warren(t, true, "netcheck", "--json", "--state", n.state)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%s: netcheck --json: %v\n%s", n.name, err, out)
		}
		proto, ext, _ := strings.Cut(rep.Portmap, " ")
		ap, err := netip.ParseAddrPort(ext)
		if !wantProto(n, proto) || err != nil || ap.Addr() != n.site.Public {
			t.Errorf("%s behind miniupnpd (%s): netcheck portmap %q, want its protocol on %v", n.name, modes[n.name], rep.Portmap, n.site.Public)
		}
		t.Logf("%s: netcheck portmap %s (mapping %s, %s)", n.name, rep.Portmap, rep.Mapping, rep.Allocation)
	}
}
