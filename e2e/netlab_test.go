package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// netlabScript builds the NAT lab; see its header for the layout and the router types.
var netlabScript = filepath.Join("..", "testdata", "netlab", "netlab.sh")

// netlab is one NAT lab (testdata/netlab/netlab.sh) built for one test: an internet segment with the
// coord's namespace on it and sites, each a NAT router with clients behind it (or a public client).
type netlab struct {
	prefix string
	coord  labHost    // PREFIX-coord; Addrs[0] and Addrs[1] are its two internet addresses
	sites  []*labSite // in the order given
	byName map[string]*labSite
}

type labSite struct {
	Name, Type string
	Router     string     // the router's namespace, "" for a public site
	Public     netip.Addr // the router's WAN address (a public client's own address)
	Clients    []labHost
}

type labHost struct {
	NS    string
	Addrs []netip.Addr
}

func (h labHost) addr() netip.Addr { return h.Addrs[0] }

// needNetlab skips the test, with a reason, where the lab cannot be built: short mode, not root, or
// ip/nft missing (outside CI, where .ci/run installs them).
func needNetlab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netlab: builds network namespaces and runs the binaries in them (not in -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("netlab: needs root (creates network namespaces and nftables NAT rules); CI runs it as root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("netlab: %s is not installed, but CI must run this test (.ci/run installs it)", tool)
			}
			t.Skipf("netlab: needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
}

// newNetlab builds a lab with the given sites ("NAME:TYPE" or "NAME:TYPE:CLIENTS", see netlab.sh)
// under a fresh random prefix; it is torn down when the test ends, failed or not, and the test fails
// if anything of it is left.
func newNetlab(t *testing.T, sites ...string) *netlab {
	t.Helper()
	needNetlab(t)
	var rnd [4]byte
	rand.Read(rnd[:])
	lab := &netlab{prefix: "wl" + hex.EncodeToString(rnd[:]), byName: map[string]*labSite{}}
	t.Cleanup(func() {
		if out, err := lab.script("down", lab.prefix); err != nil {
			t.Errorf("netlab down: %v\n%s", err, out)
		}
		if left := lab.namespaces(t); len(left) > 0 {
			t.Errorf("netlab: namespaces left behind: %v", left)
		}
	})
	out, err := lab.script(append([]string{"up", lab.prefix}, sites...)...)
	if err != nil {
		t.Fatalf("netlab up: %v\n%s", err, out)
	}
	if err := lab.parse(out); err != nil {
		t.Fatalf("netlab up: %v\n%s", err, out)
	}
	return lab
}

// script runs netlab.sh with a time limit and returns its combined output.
func (lab *netlab) script(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", append([]string{netlabScript}, args...)...).CombinedOutput()
	return string(out), err
}

// parse reads what `netlab.sh up` printed.
func (lab *netlab) parse(out string) error {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var err error
		switch {
		case len(f) >= 3 && f[0] == "coord":
			lab.coord.NS = f[1]
			lab.coord.Addrs, err = parseAddrs(f[2:])
		case len(f) == 5 && f[0] == "site":
			s := &labSite{Name: f[1], Type: f[2]}
			if f[3] != "-" {
				s.Router = f[3]
			}
			s.Public, err = netip.ParseAddr(f[4])
			lab.sites = append(lab.sites, s)
			lab.byName[s.Name] = s
		case len(f) >= 5 && f[0] == "client":
			s := lab.byName[f[1]]
			if s == nil {
				return fmt.Errorf("client of unknown site %s", f[1])
			}
			h := labHost{NS: f[3]}
			h.Addrs, err = parseAddrs(f[4:])
			s.Clients = append(s.Clients, h)
		}
		if err != nil {
			return err
		}
	}
	if len(lab.coord.Addrs) < 2 {
		return errors.New("no coord line with two addresses")
	}
	return nil
}

func parseAddrs(fields []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range fields {
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (lab *netlab) site(t *testing.T, name string) *labSite {
	t.Helper()
	s := lab.byName[name]
	if s == nil {
		t.Fatalf("netlab: no site %q", name)
	}
	return s
}

// rebind moves the site's NAT to a new port range and drops its mappings (see netlab.sh).
func (lab *netlab) rebind(t *testing.T, site string) {
	t.Helper()
	out, err := lab.script("rebind", lab.prefix, site)
	if err != nil {
		t.Fatalf("netlab rebind %s: %v\n%s", site, err, out)
	}
	t.Logf("netlab: %s", strings.TrimSpace(out))
}

// coordOnly turns the site's "UDP to and from the coord only" firewall on or off (see netlab.sh).
func (lab *netlab) coordOnly(t *testing.T, site string, on bool) {
	t.Helper()
	arg := map[bool]string{true: "on", false: "off"}[on]
	if out, err := lab.script("coordonly", lab.prefix, site, arg); err != nil {
		t.Fatalf("netlab coordonly %s %s: %v\n%s", site, arg, err, out)
	}
}

// namespaces lists the lab's namespaces that exist now.
func (lab *netlab) namespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var ns []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], lab.prefix+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// nsDialer dials from inside a network namespace: the socket is created on a thread switched into
// it and stays there. It serves as the forward dialer of a SOCKS client whose proxy listens on that
// namespace's loopback.
type nsDialer string

func (ns nsDialer) Dial(network, addr string) (net.Conn, error) {
	return ns.DialContext(context.Background(), network, addr)
}

func (ns nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if nerr := enterNS(string(ns), func() {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
	}); nerr != nil {
		return nil, nerr
	}
	return c, err
}

// labUDP opens a UDP socket on addr inside namespace ns.
func labUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	return udpListen(t, ns, addr, false).(*net.UDPConn)
}

// sendUDP sends payload from c to dst, failing the test on a local error.
func sendUDP(t *testing.T, c *net.UDPConn, dst netip.AddrPort, payload string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatalf("send %q to %v: %v", payload, dst, err)
	}
}

// recvUDP collects what arrives at c during window: payload → source address. It returns early once
// every payload in until has arrived.
func recvUDP(c *net.UDPConn, window time.Duration, until ...string) map[string]netip.AddrPort {
	got := map[string]netip.AddrPort{}
	c.SetReadDeadline(time.Now().Add(window))
	buf := make([]byte, 1500)
	for range 100 {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		got[string(buf[:n])] = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if len(until) > 0 && !slices.ContainsFunc(until, func(p string) bool { _, ok := got[p]; return !ok }) {
			break
		}
	}
	return got
}

// recvOne waits up to window for one datagram with payload at c and returns its source.
func recvOne(c *net.UDPConn, payload string, window time.Duration) (netip.AddrPort, bool) {
	from, ok := recvUDP(c, window, payload)[payload]
	return from, ok
}

func udpAddr(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestNetlabBehaviour checks the lab itself, with plain UDP sockets and no warren code: every router
// type maps and filters as its name says (the sequential one counts ports up from 30000), rebind
// changes the public port and drops old mappings, coordonly stops UDP with everyone but the coord, two
// clients behind one NAT reach each other on their LAN, and the lab leaves nothing behind, also when
// `up` fails half-way. A misconfigured router fails it.
//
// The internet side: s1 = coord address 1, port p; s2 = the same address, port p+1; s3 = coord address
// 2, port p; x = a stranger, an address the client never sent to. The client sends to s1 and s3 only.
func TestNetlabBehaviour(t *testing.T) {
	lab := newNetlab(t, "pub:public", "fc:fullcone", "ar:addr", "pr:port", "sy:symmetric", "sq:sequential", "bl:blocked", "lan:port:2")
	coordNS := lab.coord.NS
	// What each type lets in from s1 (contacted), s2 (contacted address, other port) and x (stranger);
	// whether its mapping is endpoint-independent; whether it is a NAT that rebind applies to.
	type want struct {
		inbound []string
		eim     bool
		nat     bool
	}
	wants := map[string]want{
		"public":     {[]string{"s1", "s2", "x"}, true, false},
		"fullcone":   {[]string{"s1", "s2", "x"}, true, true},
		"addr":       {[]string{"s1", "s2"}, true, true},
		"port":       {[]string{"s1"}, true, true},
		"symmetric":  {[]string{"s1"}, false, true},
		"sequential": {[]string{"s1"}, false, true},
		"blocked":    {nil, false, false},
	}
	var (
		mu    sync.Mutex
		table []string
	)
	const quiet = 400 * time.Millisecond // how long "nothing arrives" is watched
	// expect collects what reaches c: it waits (up to a safety net) for every payload in want, so that
	// a slow machine's late datagram is not taken for a filtered one, then watches quiet more for those
	// that must not come.
	expect := func(c *net.UDPConn, want ...string) map[string]netip.AddrPort {
		got := map[string]netip.AddrPort{}
		if len(want) > 0 {
			got = recvUDP(c, 30*time.Second, want...)
		}
		maps.Copy(got, recvUDP(c, quiet))
		return got
	}

	for i, s := range lab.sites {
		if s.Name == "lan" {
			continue
		}
		w := wants[s.Type]
		t.Run(s.Name+"-"+s.Type, func(t *testing.T) {
			t.Parallel()
			p := uint16(4000 + 10*i)
			sa, sb := lab.coord.Addrs[0], lab.coord.Addrs[1]
			s1 := labUDP(t, coordNS, netip.AddrPortFrom(sa, p).String())
			s2 := labUDP(t, coordNS, netip.AddrPortFrom(sa, p+1).String())
			s3 := labUDP(t, coordNS, netip.AddrPortFrom(sb, p).String())
			stranger := lab.site(t, "pub").Clients[0] // the public client; for itself, a client behind a NAT
			if s.Type == "public" {
				stranger = lab.site(t, "lan").Clients[0]
			}
			x := labUDP(t, stranger.NS, netip.AddrPortFrom(stranger.addr(), 0).String())
			c := labUDP(t, s.Clients[0].NS, "0.0.0.0:0")
			local := udpAddr(c).Port()

			// A packet to the client's future public port before the client sent anything: a router
			// must drop it without a trace (else conntrack remembers it and the client's port is
			// remapped when it does send, and the check for port preservation below fails).
			if w.nat {
				sendUDP(t, s1, netip.AddrPortFrom(s.Public, local), "early")
			}
			// Mapping: what s1 and s3 see.
			sendUDP(t, c, udpAddr(s1), "out1")
			sendUDP(t, c, udpAddr(s3), "out3")
			wait := 2 * time.Second
			if s.Type == "blocked" {
				wait = quiet
			}
			m1, ok1 := recvOne(s1, "out1", wait)
			m3, ok3 := recvOne(s3, "out3", wait)
			row := fmt.Sprintf("%-9s | client %s:%d | seen by s1 %v, by s3 %v", s.Type, s.Clients[0].addr(), local, m1, m3)
			if s.Type == "blocked" {
				if ok1 || ok3 {
					t.Errorf("blocked: UDP got out: s1 saw %v, s3 saw %v", m1, m3)
				}
				row = fmt.Sprintf("%-9s | client %s:%d | nothing arrives", s.Type, s.Clients[0].addr(), local)
				m1 = netip.AddrPortFrom(s.Public, local) // where an answer would have to go
			} else {
				if !ok1 || !ok3 {
					t.Fatalf("UDP out: s1 got it %v, s3 got it %v", ok1, ok3)
				}
				if m1.Addr() != s.Public || m3.Addr() != s.Public {
					t.Errorf("mapped addresses %v, %v; want %v", m1, m3, s.Public)
				}
				if eim := m1 == m3; eim != w.eim {
					t.Errorf("mapping endpoint-independent = %v (s1 saw %v, s3 saw %v), want %v", eim, m1, m3, w.eim)
				}
				if w.eim && m1.Port() != local {
					t.Errorf("mapping not port-preserving before any rebind: %d → %v", local, m1)
				}
				// Sequential: one counter from 30000, so s1 and s3 see its first two ports.
				if s.Type == "sequential" && (m1.Port() != 30000 || m3.Port() != 30001) {
					t.Errorf("sequential: s1 saw port %d and s3 %d, want 30000 and 30001", m1.Port(), m3.Port())
				}
			}

			// Filtering: unsolicited packets to the mapping from s1, s2 and the stranger.
			sendUDP(t, s1, m1, "s1")
			sendUDP(t, s2, m1, "s2")
			sendUDP(t, x, m1, "x")
			var in []string
			for k := range expect(c, w.inbound...) {
				in = append(in, k)
			}
			slices.Sort(in)
			if !slices.Equal(in, w.inbound) {
				t.Errorf("inbound to %v let through %v, want %v", m1, in, w.inbound)
			}
			row += fmt.Sprintf(" | in from %v", in)

			// Rebind: a new public port from the new range; the old mapping is gone.
			if w.nat {
				lab.rebind(t, s.Name)
				sendUDP(t, c, udpAddr(s1), "again")
				m, ok := recvOne(s1, "again", 2*time.Second)
				if !ok {
					t.Fatal("after rebind: nothing reaches s1")
				}
				if m.Addr() != s.Public || m.Port() == m1.Port() || m.Port() < 20000 || m.Port() > 20999 {
					t.Errorf("after rebind s1 sees %v (before: %v), want %v with a port in 20000-20999", m, m1, s.Public)
				}
				sendUDP(t, s1, m, "new")
				sendUDP(t, s1, m1, "old")
				if s.Type == "fullcone" {
					sendUDP(t, x, m, "x-new")
				}
				wantIn := []string{"new"}
				if s.Type == "fullcone" {
					wantIn = append(wantIn, "x-new")
				}
				got := expect(c, wantIn...)
				_, gotNew := got["new"]
				_, gotOld := got["old"]
				_, gotX := got["x-new"]
				if !gotNew || gotOld || (s.Type == "fullcone" && !gotX) {
					t.Errorf("after rebind: via new mapping %v, via old %v, stranger via new %v (fullcone only)", gotNew, gotOld, gotX)
				}
				row += fmt.Sprintf(" | rebind → %v", m)

				// coordonly: the coord's addresses still pass, nobody else does, either way.
				lab.coordOnly(t, s.Name, true)
				sendUDP(t, s1, m, "co-s1")
				sendUDP(t, s2, m, "co-s2")
				sendUDP(t, c, udpAddr(x), "co-out")
				wantIn = []string{"co-s1"}
				if s.Type == "fullcone" || s.Type == "addr" {
					wantIn = append(wantIn, "co-s2")
				}
				got = expect(c, wantIn...)
				_, outX := recvOne(x, "co-out", quiet)
				_, inS1 := got["co-s1"]
				_, inS2 := got["co-s2"]
				lab.coordOnly(t, s.Name, false)
				sendUDP(t, c, udpAddr(x), "open-out")
				_, outX2 := recvOne(x, "open-out", 2*time.Second)
				if !inS1 || inS2 != (s.Type == "fullcone" || s.Type == "addr") || outX || !outX2 {
					t.Errorf("coordonly: in from coord %v (want true), from coord's other port %v, out to a stranger %v (want false), and when off %v (want true)",
						inS1, inS2, outX, outX2)
				}
			}
			mu.Lock()
			table = append(table, row)
			mu.Unlock()
		})
	}

	t.Run("two-clients-one-nat", func(t *testing.T) {
		t.Parallel()
		s := lab.site(t, "lan")
		s1 := labUDP(t, coordNS, netip.AddrPortFrom(lab.coord.Addrs[0], 4900).String())
		c1 := labUDP(t, s.Clients[0].NS, "0.0.0.0:0")
		c2 := labUDP(t, s.Clients[1].NS, "0.0.0.0:0")
		sendUDP(t, c1, udpAddr(s1), "c1")
		sendUDP(t, c2, udpAddr(s1), "c2")
		got := recvUDP(s1, 2*time.Second, "c1", "c2")
		if len(got) != 2 || got["c1"].Addr() != s.Public || got["c2"].Addr() != s.Public || got["c1"] == got["c2"] {
			t.Errorf("two clients' mappings: %v; want two ports of %v", got, s.Public)
		}
		// Directly on the LAN, no NAT between them.
		to2 := netip.AddrPortFrom(s.Clients[1].addr(), udpAddr(c2).Port())
		sendUDP(t, c1, to2, "lan")
		if from, ok := recvOne(c2, "lan", 2*time.Second); !ok || from.Addr() != s.Clients[0].addr() {
			t.Errorf("LAN c1 → c2: arrived %v from %v", ok, from)
		}
		// Hairpinning (c1 → c2's public mapping) is not modelled; say what happens.
		sendUDP(t, c1, got["c2"], "hairpin")
		_, hair := recvOne(c2, "hairpin", quiet)
		mu.Lock()
		table = append(table, fmt.Sprintf("two clients behind one port NAT: mappings %v and %v; LAN direct ok; hairpin %v",
			got["c1"], got["c2"], hair))
		mu.Unlock()
	})

	t.Run("cleanup", func(t *testing.T) {
		t.Parallel()
		// `up` failing half-way removes what it built.
		var rnd [4]byte
		rand.Read(rnd[:])
		other := &netlab{prefix: "wl" + hex.EncodeToString(rnd[:])}
		cmd := exec.Command("bash", netlabScript, "up", other.prefix, "a:public", "b:port", "c:port")
		cmd.Env = append(os.Environ(), "NETLAB_FAIL_AFTER_SITE=2")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "up failed, removing") {
			t.Errorf("up with a failure: %v\n%s", err, out)
		}
		if left := other.namespaces(t); len(left) > 0 {
			t.Errorf("after a failed up: %v left", left)
			other.script("down", other.prefix)
		}
		// `down` ends what runs in the lab and removes every namespace; another lab is untouched.
		if out, err := other.script("up", other.prefix, "a:port"); err != nil {
			t.Fatalf("up: %v\n%s", err, out)
		}
		sleeper := exec.Command("ip", "netns", "exec", other.prefix+"-a-1", "sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- sleeper.Wait() }()
		if out, err := other.script("down", other.prefix); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			sleeper.Process.Kill()
			t.Error("down left a process running in the lab")
		}
		if left := other.namespaces(t); len(left) > 0 {
			t.Errorf("after down: %v left", left)
		}
		// pub: 1, fc/ar/pr/sy/sq/bl: router and client, lan: router and two clients, inet, coord.
		if n := len(lab.namespaces(t)); n != 18 {
			t.Errorf("the other lab has %d namespaces, want 18", n)
		}
	})

	t.Cleanup(func() {
		slices.Sort(table)
		t.Logf("NAT behaviour measured (s1, s3: two coord addresses; in from: unsolicited to s1's mapping from s1, s2 = s1's address/other port, x = stranger):\n%s",
			strings.Join(table, "\n"))
	})
}
