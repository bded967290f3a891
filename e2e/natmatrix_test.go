package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/node/localapi"
)

// matrixNode is one `warren up` in a client namespace of the NAT lab.
type matrixNode struct {
	name  string
	site  *labSite
	host  labHost
	state string
	proc  *proc
	up    time.Time // when `warren up` started
	body  []byte    // what its exposed HTTP service answers
	api   *localapi.Client
	http  *http.Client // through its own SOCKS port, from inside its namespace
}

// newMatrixNode is the node to run in h's namespace, state under tmp: its HTTP service is up, and
// its HTTP client goes through the SOCKS port 127.0.0.1:1080 the node will open there.
func newMatrixNode(t *testing.T, s *labSite, h labHost, name, tmp string) *matrixNode {
	t.Helper()
	n := &matrixNode{name: name, site: s, host: h, state: filepath.Join(tmp, name), api: localapi.NewClient(filepath.Join(tmp, name))}
	n.body = serveHTTP(t, h.NS, name)
	d, err := proxy.SOCKS5("tcp", "127.0.0.1:1080", nil, nsDialer(h.NS))
	if err != nil {
		t.Fatal(err)
	}
	n.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: d.(proxy.ContextDialer).DialContext, DisableKeepAlives: true}}
	return n
}

// natWantPath is the path a pair of nodes should end up on: direct wherever port-preserving hole
// punching can open both NATs, and between a symmetric NAT (a new port per destination) and a
// port-restricted one, where the birthday technique does (peer/birthday.go), aimed at the predicted
// ports where the symmetric NAT allocates sequentially (peer/predict.go), which also pairs two
// sequential NATs; relay between two symmetric NATs of which one (or both) picks ports at random. Two
// clients behind the same NAT meet on their LAN. A symmetric NAT that maps the node's port on request
// (upnp: miniupnpd) is direct with everyone: peers send to the mapped port. A node whose UDP is blocked,
// or that reaches out only through an HTTP proxy, reaches everyone through the coord's relay over TCP:
// relay-tcp from its side, relay from the other's (relay-tcp when both are on TCP).
// It is the path a's status shows for b.
func natWantPath(a, b *matrixNode) string {
	switch {
	case a.site == b.site:
		return "direct"
	case tcpOnly(a):
		return "relay-tcp"
	case tcpOnly(b):
		return "relay"
	}
	if hardNAT(a) && hardNAT(b) && !(seqNAT(a) && seqNAT(b)) {
		return "relay"
	}
	return "direct"
}

// tcpOnly says whether n has no UDP to the outside: its router blocks UDP, or lets it out only
// through an HTTP CONNECT proxy.
func tcpOnly(n *matrixNode) bool { return n.site.Type == "blocked" || n.site.Type == "proxyonly" }

// portMapped says whether n's router maps its port on request (PCP, NAT-PMP, UPnP-IGD: miniupnpd).
func portMapped(n *matrixNode) bool { return n.site.Type == "upnp" }

// hardNAT says whether n's NAT maps endpoint-dependently (a new public port per destination) and
// maps no port on request.
func hardNAT(n *matrixNode) bool { return n.site.Type == "symmetric" || seqNAT(n) }

// seqNAT says whether n's NAT allocates its ports sequentially (predictably).
func seqNAT(n *matrixNode) bool { return n.site.Type == "sequential" }

// birthdayPair says whether a and b need the birthday technique for a direct path: plain hole
// punching fails between them (a hard NAT and a port-restricted one, or two sequential ones).
func birthdayPair(a, b *matrixNode) bool {
	strict := func(n *matrixNode) bool { return n.site.Type == "port" }
	return a.site != b.site && (hardNAT(a) && strict(b) || hardNAT(b) && strict(a) || seqNAT(a) && seqNAT(b))
}

const (
	matrixPort     = 8080
	matrixBodySize = 64 << 10
)

// TestNATMatrix runs a coord on the lab's internet segment and one node per client namespace (public,
// full cone, address-restricted, port-restricted, two symmetric with random ports, two symmetric that
// allocate sequentially, two clients behind one port-restricted NAT, a symmetric router that maps
// ports on request — miniupnpd with PCP, NAT-PMP and UPnP-IGD), all in one network, and checks every
// pair: an HTTP fetch through each side's SOCKS port from the other's exposed service (both ways,
// content compared), and the path `warren status --json` shows, direct or relay as natWantPath says.
// The node behind the UDP-blocking router and the one that reaches out only through an HTTP CONNECT
// proxy (`warren up --proxy`) log in over TCP and reach every peer through the coord's relay over TCP
// (relay-tcp). Every pair with the port-mapping router must end direct.
// The table in the log holds every pair's path, when each side first saw it relayed and direct, and the
// time to the first fetched body, counted from the moment the network was complete (last join).
// Then: a firewall closing on one site (its direct links must fail over to the relay), opening again
// (relay → direct upgrade), and — opt-in until it works — roaming behind a rebinding NAT, each timed.
func TestNATMatrix(t *testing.T) {
	sites := []string{"pub:public", "fc:fullcone", "ar:addr", "pr:port", "sy:symmetric", "sy2:symmetric", "sq:sequential", "sq2:sequential",
		"lan:port:2", "bl:blocked", "px:proxyonly"}
	mapping := haveMiniupnpd(t)
	if mapping {
		sites = append(sites, "up:upnp")
	} else {
		t.Log("no miniupnpd: the matrix runs without its port-mapping router (apt-get install miniupnpd-nftables)")
	}
	lab := newNetlab(t, sites...)
	if mapping {
		startMiniupnpd(t, lab, "up", "all")
	}
	proxyURL, _ := startLabProxy(t, lab, "px")
	tmp := t.TempDir()
	coord := startNSProc(t, lab.coord.NS, "warren-coord", "--listen", netip.AddrPortFrom(lab.coord.addr(), 7400).String(), "--data", filepath.Join(tmp, "coord"))
	coordAddr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	upArgs := func(n *matrixNode, extra ...string) []string {
		return append([]string{"up", "--coord", coordAddr, "--coord-key", fp, "--state", n.state, "--name", n.name,
			"--socks", fmt.Sprintf("127.0.0.1:%d", 1080), "--expose", fmt.Sprintf("tcp:%d", matrixPort), "--log-level", "debug"}, extra...)
	}

	var nodes []*matrixNode
	for _, s := range lab.sites {
		for k, h := range s.Clients {
			name := s.Name
			if len(s.Clients) > 1 {
				name = fmt.Sprintf("%s%d", s.Name, k+1)
			}
			nodes = append(nodes, newMatrixNode(t, s, h, name, tmp))
		}
	}
	byName := map[string]*matrixNode{}
	for _, n := range nodes {
		byName[n.name] = n
		var extra []string
		switch n.site.Type {
		case "proxyonly":
			extra = []string{"--proxy", proxyURL}
		case "upnp":
			extra = []string{"--no-portmap=false"} // TestMain sets WARREN_NO_PORTMAP for every node
		}
		n.up = time.Now()
		n.proc = startNSProc(t, n.host.NS, "warren", upArgs(n, extra...)...)
	}
	for _, n := range nodes {
		waitLoggedIn(t, n.state)
	}
	warren(t, true, "network", "create", "lab", "--state", nodes[0].state, "--password", "pw")
	for _, n := range nodes[1:] {
		warren(t, true, "network", "join", "lab", "--state", n.state, "--password", "pw")
	}
	t0 := time.Now()
	t.Logf("network complete %v after the first `warren up`", t0.Sub(nodes[0].up).Round(time.Millisecond))

	// Every node's view of every peer, polled through the local API: when each path was first seen.
	type seen struct{ relay, direct time.Duration }
	var mu sync.Mutex
	first := map[[2]string]*seen{}
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 1200 { // ≤ 2 minutes; stopped long before
			for _, n := range nodes {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := n.api.Status(ctx)
				cancel()
				if err != nil {
					continue
				}
				at := time.Since(t0)
				mu.Lock()
				for _, p := range st.Peers {
					k := [2]string{n.name, p.Name}
					if first[k] == nil {
						first[k] = &seen{}
					}
					if (p.Path == "relay" || p.Path == "relay-tcp") && first[k].relay == 0 {
						first[k].relay = at
					}
					if p.Path == "direct" && first[k].direct == 0 {
						first[k].direct = at
					}
				}
				mu.Unlock()
			}
			select {
			case <-stopPoll:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		close(stopPoll)
		<-pollDone
	}()

	// Fetch both ways for every pair at once; each keeps trying until its first success.
	type result struct {
		ttfb time.Duration // since t0; 0 if never
		err  error
	}
	results := map[[2]string]result{}
	var wg sync.WaitGroup
	fetchDeadline := t0.Add(40 * time.Second)
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				url := fmt.Sprintf("http://%s.warren:%d/", b.name, matrixPort)
				var err error
				for range 200 {
					var body []byte
					body, err = getBody(a.http, url)
					if err == nil && !bytes.Equal(body, b.body) {
						err = fmt.Errorf("wrong body: %d bytes, want %d (%q…)", len(body), len(b.body), body[:min(len(body), 20)])
					}
					if err == nil {
						mu.Lock()
						results[[2]string{a.name, b.name}] = result{ttfb: time.Since(t0)}
						mu.Unlock()
						return
					}
					if time.Now().After(fetchDeadline) {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				mu.Lock()
				results[[2]string{a.name, b.name}] = result{err: err}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	// The paths as `warren status --json` shows them, once every pair has settled (or time is up).
	pathDeadline := t0.Add(45 * time.Second)
	var views map[string]localapi.Status
	for range 100 {
		views = map[string]localapi.Status{}
		settled := true
		for _, n := range nodes {
			st, err := cliStatus(n.state)
			if err != nil {
				t.Errorf("%s: warren status: %v", n.name, err)
				settled = false
				continue
			}
			views[n.name] = st
			if st.Self.NAT == nil { // NAT discovery still running
				settled = false
			}
			for _, m := range nodes {
				if m != n && peerPath(st, m.name) != natWantPath(n, m) {
					settled = false
				}
			}
		}
		if settled || time.Now().After(pathDeadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The table, and the checks.
	var rows []string
	rows = append(rows, fmt.Sprintf("%-5s %-5s | %-15s %-15s | %-13s %-13s | %-11s %-11s | %-9s %-9s",
		"A", "B", "want", "path", "A sees relay", "A sees direct", "fetch A→B", "fetch B→A", "NAT A", "NAT B"))
	natOf := func(n *matrixNode) string {
		if st, ok := views[n.name]; ok && st.Self.NAT != nil {
			return st.Self.NAT.Mapping
		}
		return "?"
	}
	allocOf := func(n *matrixNode) string {
		if st, ok := views[n.name]; ok && st.Self.NAT != nil {
			return st.Self.NAT.Allocation
		}
		return "?"
	}
	portmapOf := func(n *matrixNode) string {
		if st, ok := views[n.name]; ok && st.Self.NAT != nil {
			return st.Self.NAT.Portmap
		}
		return "?"
	}
	natCol := func(n *matrixNode) string {
		if a := allocOf(n); a == "sequential" {
			return short(natOf(n)) + "+seq"
		}
		if proto, _, ok := strings.Cut(portmapOf(n), " "); ok {
			return short(natOf(n)) + "+" + proto
		}
		return short(natOf(n))
	}
	ms := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			want, wantBA := natWantPath(a, b), natWantPath(b, a)
			pa, pb := peerPath(views[a.name], b.name), peerPath(views[b.name], a.name)
			if wantBA != want {
				want += "/" + wantBA
			}
			got := pa
			if pb != pa {
				got = pa + "/" + pb
			}
			mu.Lock()
			s := first[[2]string{a.name, b.name}]
			rab, rba := results[[2]string{a.name, b.name}], results[[2]string{b.name, a.name}]
			mu.Unlock()
			if s == nil {
				s = &seen{}
			}
			rows = append(rows, fmt.Sprintf("%-5s %-5s | %-15s %-15s | %-13s %-13s | %-11s %-11s | %-9s %-9s",
				a.name, b.name, want, got, ms(s.relay), ms(s.direct), ms(rab.ttfb), ms(rba.ttfb), natCol(a), natCol(b)))
			if pa != natWantPath(a, b) || pb != wantBA {
				t.Errorf("%s (%s) ↔ %s (%s): path %s / %s, want %s", a.name, a.site.Type, b.name, b.site.Type, pa, pb, want)
			}
			if a.site == b.site {
				// (the node may show an IPv4 endpoint in its v4-mapped IPv6 form)
				if ep, err := netip.ParseAddrPort(peerEndpoint(views[a.name], b.name)); err != nil || ep.Addr().Unmap() != b.host.addr() {
					t.Errorf("%s → %s behind the same NAT: endpoint %q, want its LAN address %v", a.name, b.name, peerEndpoint(views[a.name], b.name), b.host.addr())
				}
			}
			for _, r := range []struct {
				from, to string
				res      result
			}{{a.name, b.name, rab}, {b.name, a.name, rba}} {
				if r.res.err != nil || r.res.ttfb == 0 {
					t.Errorf("fetch %s → %s through SOCKS: %v", r.from, r.to, r.res.err)
				}
			}
		}
	}
	// From `warren up` to the first fetched body, per path (the nodes started within a few ms).
	sinceUp := t0.Sub(nodes[len(nodes)-1].up)
	kind := func(a, b *matrixNode) string {
		if birthdayPair(a, b) && (seqNAT(a) || seqNAT(b)) {
			return "predicted"
		}
		if birthdayPair(a, b) {
			return "birthday"
		}
		if tcpOnly(a) || tcpOnly(b) {
			return "relay-tcp"
		}
		if portMapped(a) || portMapped(b) {
			return "portmap"
		}
		return natWantPath(a, b)
	}
	for _, path := range []string{"direct", "birthday", "predicted", "portmap", "relay", "relay-tcp"} {
		var lo, hi time.Duration
		for k, r := range results {
			if r.ttfb == 0 || kind(byName[k[0]], byName[k[1]]) != path {
				continue
			}
			if d := sinceUp + r.ttfb; lo == 0 || d < lo {
				lo = d
			}
			if d := sinceUp + r.ttfb; d > hi {
				hi = d
			}
		}
		rows = append(rows, fmt.Sprintf("%s pairs: `warren up` to first fetched body %s … %s", path, ms(lo), ms(hi)))
	}
	t.Logf("NAT matrix (times since the network was complete; NAT = the node's own netcheck mapping):\n%s", strings.Join(rows, "\n"))

	// Direct → relay → direct: ar's router lets UDP through to the coord only (a firewall closing), so
	// its direct links must fail over to the relay; then it opens again and they must move back to
	// direct. Then roaming: pr's router rebinds (every mapping gone, a new public port), and its links
	// must recover, to direct where they were direct.
	ar, pr := byName["ar"], byName["pr"]
	pairsOf := func(n *matrixNode, others ...string) [][2]*matrixNode {
		var out [][2]*matrixNode
		for _, o := range others {
			out = append(out, [2]*matrixNode{n, byName[o]})
		}
		return out
	}
	t.Run("firewall-closes", func(t *testing.T) {
		lab.coordOnly(t, "ar", true)
		settlePairs(t, "ar's router passes UDP to the coord only", pairsOf(ar, "pub", "pr", "sy", "lan1"),
			func(a, b *matrixNode) string { return "relay" }, 40*time.Second)
	})
	t.Run("firewall-opens", func(t *testing.T) {
		lab.coordOnly(t, "ar", false)
		settlePairs(t, "ar's router open again: relay → direct", pairsOf(ar, "pub", "pr", "sy", "lan1"), natWantPath, 30*time.Second)
	})
	t.Run("roam", func(t *testing.T) {
		// SSH-like long-lived connections from pr, opened before the move, one per kind of peer: each is
		// one keep-alive HTTP connection through pr's proxy, and must be the same one afterwards.
		type session struct {
			to     *matrixNode
			client *http.Client
			opened net.Conn // the proxy connection of the first request
		}
		var sessions []*session
		d, err := proxy.SOCKS5("tcp", "127.0.0.1:1080", nil, nsDialer(pr.host.NS))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"pub", "fc", "lan1", "sy"} {
			ss := &session{to: byName[name]}
			ss.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DialContext: d.(proxy.ContextDialer).DialContext, MaxIdleConnsPerHost: 1}}
			t.Cleanup(ss.client.CloseIdleConnections)
			ss.opened = sessionGet(t, ss.client, ss.to, nil)
			sessions = append(sessions, ss)
		}
		lab.rebind(t, "pr")
		settlePairs(t, "pr's router rebinds (new public port, mappings dropped)", pairsOf(pr, "pub", "fc", "lan1"), natWantPath, 8*time.Second) // target 5 s; 2.4-5.3 s in stop 37 (a first fetch that stalls waits out its 3 s timeout), at once where pr dialed
		// pr ↔ sy and pr ↔ sq were opened by the birthday technique: the hard side's NAT accepts only
		// pr's old address on that mapping, so the link cannot follow; it falls back to the relay
		// (stall detection) and a new attempt opens a new direct link. A birthday attempt can miss (it is
		// a matter of odds); the next one comes hardMin (15 s) later, so the limit allows for one miss.
		settlePairs(t, "pr's router rebinds: pr ↔ sy, sq (birthday) punch again", pairsOf(pr, "sy", "sq"), natWantPath, 35*time.Second)
		for _, ss := range sessions {
			if birthdayPair(pr, ss.to) {
				sessionGet(t, ss.client, ss.to, nil)
				t.Logf("connection to %s: a new one after the move (a birthday link does not survive roaming)", ss.to.name)
				continue
			}
			sessionGet(t, ss.client, ss.to, ss.opened)
		}
	})

	// What each node's NAT discovery found, against what the lab built.
	for _, n := range nodes {
		want, wantAlloc := "endpoint-independent", ""
		switch n.site.Type {
		case "symmetric", "upnp":
			want, wantAlloc = "endpoint-dependent", "random"
		case "sequential":
			want, wantAlloc = "endpoint-dependent", "sequential"
		case "blocked", "proxyonly":
			want = "unknown" // over TCP: NAT discovery has no UDP to measure
		}
		if got := natOf(n); got != want {
			t.Errorf("%s behind %s: netcheck mapping %q, want %q", n.name, n.site.Type, got, want)
		}
		if got := allocOf(n); got != wantAlloc {
			t.Errorf("%s behind %s: netcheck port allocation %q, want %q", n.name, n.site.Type, got, wantAlloc)
		}
		// The port-mapping router mapped the node's port on its WAN address; no other node tries.
		_, ext, _ := strings.Cut(portmapOf(n), " ")
		if ap, err := netip.ParseAddrPort(ext); portMapped(n) && (err != nil || ap.Addr() != n.site.Public) {
			t.Errorf("%s behind %s: portmap %q, want a mapping on %v", n.name, n.site.Type, portmapOf(n), n.site.Public)
		} else if !portMapped(n) && portmapOf(n) != "off" {
			t.Errorf("%s behind %s: portmap %q, want off", n.name, n.site.Type, portmapOf(n))
		}
	}
	// And `warren netcheck` says so (a fresh run, after everything else: it moves sq's counter).
	out := warren(t, true, "netcheck", "--state", byName["sq"].state)
	if !strings.Contains(out, "ports:        sequential, +1 per mapping") {
		t.Errorf("warren netcheck behind the sequential NAT does not say so:\n%s", out)
	}
	t.Logf("warren netcheck behind the sequential NAT:\n%s", out)
}

// settlePairs waits, for every pair at once, until a fetch each way works and both sides show the path
// want gives, and logs how long each took after the event that preceded the call, with every path
// change either side showed on the way; up to limit.
func settlePairs(t *testing.T, event string, pairs [][2]*matrixNode, want func(a, b *matrixNode) string, limit time.Duration) {
	t.Helper()
	start := time.Now()
	rows := make([]string, len(pairs))
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, b := p[0], p[1]
			w := want(a, b)
			sides := [2][2]*matrixNode{{a, b}, {b, a}}
			var fetched [2]time.Duration // a→b, b→a
			var fetchErr error
			var mu sync.Mutex
			var changes [2][]pathChange // as a sees b, as b sees a; under mu
			settledAt := func(k int) time.Duration {
				mu.Lock()
				defer mu.Unlock()
				if c := changes[k]; len(c) > 0 && c[len(c)-1].path == w {
					return max(c[len(c)-1].at, time.Millisecond)
				}
				return 0
			}
			// The paths, every 100 ms, beside the fetches (which may each take seconds to fail).
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for time.Since(start) < limit {
					for k, sd := range sides {
						ctx, cancel := context.WithTimeout(context.Background(), time.Second)
						st, err := sd[0].api.Status(ctx)
						cancel()
						if err != nil {
							continue
						}
						path := peerPath(*st, sd[1].name)
						mu.Lock()
						if c := changes[k]; len(c) == 0 || c[len(c)-1].path != path {
							changes[k] = append(changes[k], pathChange{path, time.Since(start)})
						}
						mu.Unlock()
					}
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}()
			for time.Since(start) < limit && (fetched[0] == 0 || fetched[1] == 0) {
				for k, sd := range sides {
					if fetched[k] != 0 {
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					body, err := getBodyCtx(ctx, sd[0].http, fmt.Sprintf("http://%s.warren:%d/", sd[1].name, matrixPort))
					cancel()
					if err == nil && !bytes.Equal(body, sd[1].body) {
						err = fmt.Errorf("wrong body (%d bytes)", len(body))
					}
					if err == nil {
						fetched[k] = time.Since(start)
					} else {
						fetchErr = fmt.Errorf("%s → %s: %w", sd[0].name, sd[1].name, err)
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			// Then give the paths the rest of the time to settle (a relay → direct move comes later
			// than the first byte).
			for time.Since(start) < limit {
				if settledAt(0) != 0 && settledAt(1) != 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			close(stop)
			<-watched
			if fetched[0] == 0 || fetched[1] == 0 || settledAt(0) == 0 || settledAt(1) == 0 {
				t.Errorf("%s: %s ↔ %s not settled on %s within %v: fetched after %v / %v (%v); paths seen %v / %v",
					event, a.name, b.name, w, limit, fetched[0], fetched[1], fetchErr, changes[0], changes[1])
			}
			rows[i] = fmt.Sprintf("%-5s %-5s | want %-6s | fetch %-6s %-6s | %s sees %v | %s sees %v",
				a.name, b.name, w, secs(fetched[0]), secs(fetched[1]), a.name, changes[0], b.name, changes[1])
		}()
	}
	wg.Wait()
	t.Logf("%s (times after the event: first fetch A→B, B→A; path changes as each side shows them):\n%s", event, strings.Join(rows, "\n"))
}

// pathChange is a path a node showed for a peer, from when on.
type pathChange struct {
	path string
	at   time.Duration
}

func (c pathChange) String() string { return fmt.Sprintf("%s@%s", c.path, secs(c.at)) }

func secs(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func short(mapping string) string {
	switch mapping {
	case "endpoint-independent":
		return "EIM"
	case "endpoint-dependent":
		return "EDM"
	}
	return mapping
}

// serveHTTP serves a body naming the node plus random bytes on 127.0.0.1:matrixPort inside ns; it
// returns the body.
func serveHTTP(t *testing.T, ns, name string) []byte {
	t.Helper()
	body := make([]byte, matrixBodySize)
	rand.Read(body)
	copy(body, fmt.Sprintf("hello from %s\n", name))
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", matrixPort)) })
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return body
}

func getBody(c *http.Client, url string) ([]byte, error) {
	return getBodyCtx(context.Background(), c, url)
}

func getBodyCtx(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// cliStatus runs `warren status --json` for the node with the given state directory.
func cliStatus(state string) (localapi.Status, error) {
	var st localapi.Status
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := binaries()
	if err != nil {
		return st, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "warren"), "status", "--json", "--state", state).Output()
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	return st, json.Unmarshal(out, &st)
}

func peerPath(st localapi.Status, name string) string {
	for _, p := range st.Peers {
		if p.Name == name {
			return p.Path
		}
	}
	return "absent"
}

func peerEndpoint(st localapi.Status, name string) string {
	for _, p := range st.Peers {
		if p.Name == name {
			return p.Endpoint
		}
	}
	return ""
}

// sessionGet fetches from n's service over c and returns the proxy connection it used; if want is
// set, the request must have reused that very connection (the connection survived).
func sessionGet(t *testing.T, c *http.Client, n *matrixNode, want net.Conn) net.Conn {
	t.Helper()
	var used net.Conn
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { used, reused = info.Conn, info.Reused },
	})
	body, err := getBodyCtx(ctx, c, fmt.Sprintf("http://%s.warren:%d/", n.name, matrixPort))
	switch {
	case err != nil:
		t.Fatalf("long-lived connection to %s: %v", n.name, err)
	case !bytes.Equal(body, n.body):
		t.Fatalf("long-lived connection to %s: wrong body", n.name)
	case want != nil && (!reused || used != want):
		t.Errorf("long-lived connection to %s did not survive: the request needed a new connection", n.name)
	case want != nil:
		t.Logf("long-lived connection to %s survived the move", n.name)
	}
	return used
}
