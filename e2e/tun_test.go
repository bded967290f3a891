package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
)

// TestTUN runs two `warren up --tun` nodes, each in a network namespace of its own joined by a veth
// pair (10.99.0.0/24, nothing outside the namespaces changes), plus a rootless proxy node, and checks
// ping, TCP (on the stream path: both ways, half-close, refusals; on the packet path, where the
// kernel's large TSO segments are cut to the MTU's), broadcast, the inbound filter, TUN↔proxy
// traffic and that the device and its routes disappear on exit, after a crash and when a
// stale device is in the way.
func TestTUN(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	needTool(t, "ip")
	nsA, nsB := netnsPair(t)
	tmp := t.TempDir()

	coord := startNSProc(t, nsA, "warren-coord", "--listen", "10.99.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	// Services: the TUN nodes' exposed TCP port 7000 and UDP port 7001 listen on every address (the
	// kernel delivers overlay traffic to the device's address); 7002 and 7003 listen but are not
	// exposed. carol (proxy mode, in nsB too) serves tcp:7100 on loopback, as proxy mode expects.
	sumA := tcpBlob(t, nsA, "0.0.0.0:7000", 2<<20)
	sumB := tcpBlob(t, nsB, "0.0.0.0:7000", 2<<20)
	tcpBlob(t, nsB, "0.0.0.0:7002", 1)
	sumC := tcpBlob(t, nsB, "127.0.0.1:7100", 1<<20)
	udpB := udpListen(t, nsB, "0.0.0.0:7001", false)
	udpB3 := udpListen(t, nsB, "0.0.0.0:7003", false)
	// bob's localhost-only services, exposed too: TCP 7004 and a UDP echo on 7005. Nothing listens on
	// exposed tcp:7006, which bob warns about at start.
	sumLo := tcpBlob(t, nsB, "127.0.0.1:7004", 1<<20)
	udpLo := udpListen(t, nsB, "127.0.0.1:7005", false)
	for _, c := range []net.PacketConn{udpB, udpLo} { // bob's UDP services answer every datagram
		serveUDPEcho(t, c)
	}
	// bob's tcp:7008 hashes what it reads until the client half-closes, then answers the hash.
	var lnHash net.Listener
	var err error
	inNS(t, nsB, func() { lnHash, err = net.Listen("tcp", "0.0.0.0:7008") })
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, lnHash, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			c.Write(h.Sum(nil))
		}
	})

	stateA, stateB, stateC, stateD := filepath.Join(tmp, "a"), filepath.Join(tmp, "b"), filepath.Join(tmp, "c"), filepath.Join(tmp, "dave")
	upA := []string{"up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "10.99.0.1:0",
		"--socks", "", "--tun", "--tun-name", "warren0", "--expose", "tcp:7000,udp:7001"}
	a := startNSProc(t, nsA, "warren", upA...)
	if l := a.line(t, "warren node"); !strings.Contains(l, "TUN device warren0") {
		t.Errorf("alice says: %s", l)
	}
	b := startNSProc(t, nsB, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateB, "--name", "bob", "--listen", "10.99.0.2:0",
		"--socks", "", "--tun", "--expose", "tcp:7000,udp:7001,tcp:7004,udp:7005,tcp:7006,tcp:7007,tcp:7008")
	startNSProc(t, nsB, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateC, "--name", "carol", "--listen", "10.99.0.2:0",
		"--socks", "127.0.0.1:1080", "--expose", "tcp:7100")
	// dave (proxy mode, in nsB) sends proxied TCP as IP packets: a TUN node's kernel answers such a
	// flow on the packet path, so its large segments (TSO) must be cut to the MTU's.
	startNSProc(t, nsB, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateD, "--name", "dave", "--listen", "10.99.0.2:0",
		"--socks", "127.0.0.1:1081", "--packet-path")
	for _, s := range []string{stateA, stateB, stateC, stateD} {
		waitLoggedIn(t, s)
	}
	warren(t, true, "network", "create", "tunnet", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "tunnet", "--state", stateB, "--password", "pw")
	warren(t, true, "network", "join", "tunnet", "--state", stateC, "--password", "pw")
	warren(t, true, "network", "join", "tunnet", "--state", stateD, "--password", "pw")
	waitDirect(t, stateA, "bob")
	waitDirect(t, stateA, "carol")
	waitDirect(t, stateC, "alice")
	waitDirect(t, stateD, "alice")
	ipA, ipB, ipC := ipStrings(statusOf(t, stateA).Self.IPs), ipStrings(statusOf(t, stateB).Self.IPs), ipStrings(statusOf(t, stateC).Self.IPs)
	t.Logf("alice %v, bob %v, carol %v", ipA, ipB, ipC)

	t.Run("ping", func(t *testing.T) {
		needTool(t, "ping")
		for _, dst := range []string{ipB[0], ipB[1]} {
			out, err := nsExec(nsA, "ping", "-c", "3", "-i", "0.2", "-W", "5", dst)
			if err != nil || !strings.Contains(out, " 0% packet loss") {
				t.Errorf("ping %s: %v\n%s", dst, err, out)
			}
		}
		// `warren ping` uses the netstack, which runs beside the device; its replies must find it.
		if out := warren(t, true, "ping", "bob", "-c", "2", "-i", "100ms", "--state", stateA); !strings.Contains(out, " 0% loss") {
			t.Errorf("warren ping:\n%s", out)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		// TCP between the devices rides the stream path: alice's stack ends the connection and opens
		// a QUIC stream (counted), so the 2 MiB (some 1700 segments on the packet path) moves with
		// (almost) no overlay packets either way.
		streams := func(state, result string) float64 {
			f, _ := scrapeNode(t, state)
			return sample(f, "warren_node_tun_streams_total", "result", result)
		}
		sent := func(state string) uint64 { return statusOf(t, state).Stats.PacketsSent }
		dialed, sentA, sentB := streams(stateA, "dialed"), sent(stateA), sent(stateB)
		if sum, err := fetchBlob(nsA, net.JoinHostPort(ipB[0], "7000")); err != nil || sum != sumB {
			t.Errorf("alice → bob:7000 over IPv4: %v (sha256 match %v)", err, sum == sumB)
		}
		if d := streams(stateA, "dialed") - dialed; d != 1 {
			t.Errorf("alice's device stack dialed %v streams for one connection", d)
		}
		if dA, dB := sent(stateA)-sentA, sent(stateB)-sentB; dA > 100 || dB > 100 {
			t.Errorf("2 MiB over TCP took %d overlay packets from alice and %d from bob: not the stream path", dA, dB)
		}
		if sum, err := fetchBlob(nsB, net.JoinHostPort(ipA[1], "7000")); err != nil || sum != sumA {
			t.Errorf("bob → alice:7000 over IPv6: %v (sha256 match %v)", err, sum == sumA)
		}
		// Upload and half-close: alice sends 1 MiB, closes her side, and reads bob's hash of it.
		up := make([]byte, 1<<20)
		rand.Read(up)
		var c net.Conn
		var err error
		inNS(t, nsA, func() { c, err = net.DialTimeout("tcp", net.JoinHostPort(ipB[0], "7008"), 5*time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Write(up)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		got, rerr := io.ReadAll(c)
		c.Close()
		if want := sha256.Sum256(up); err != nil || rerr != nil || !bytes.Equal(got, want[:]) {
			t.Errorf("alice → bob:7008, 1 MiB up then half-close: %v, %v, hash match %v", err, rerr, bytes.Equal(got, want[:]))
		}
		// bob's service on its overlay address only: the stream is dialed there, not on 127.0.0.1.
		sumOv := tcpBlob(t, nsB, net.JoinHostPort(ipB[0], "7007"), 1<<20)
		if sum, err := fetchBlob(nsA, net.JoinHostPort(ipB[0], "7007")); err != nil || sum != sumOv {
			t.Errorf("alice → bob:7007 (on bob's overlay address only): %v (sha256 match %v)", err, sum == sumOv)
		}
		// Not exposed: bob refuses the stream, alice's stack answers the SYN with a RST, although
		// something listens there.
		refused := streams(stateA, "refused")
		start := time.Now()
		if _, err := fetchBlob(nsA, net.JoinHostPort(ipB[0], "7002")); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("unexposed bob:7002: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("refusal took %v", d)
		}
		if d := streams(stateA, "refused") - refused; d != 1 {
			t.Errorf("refused streams: %v more, want 1", d)
		}
	})

	t.Run("dns", func(t *testing.T) {
		// alice's node answers NAME.warren at its DNS addresses, for what its kernel routes into the
		// device; Go's own resolver asks them from inside alice's namespace.
		st := statusOf(t, stateA)
		if got := ipStrings(st.Self.DNS); strings.Join(got, " ") != "100.127.255.254 fd7a:7761:7272:ffff:ffff:ffff:ffff:ffff" {
			t.Fatalf("self.dns = %v", got)
		}
		// Not registered from a network namespace: the line to add by hand (resolvectl or resolv.conf).
		if !strings.Contains(st.Self.DNSSetup, "100.127.255.254") || strings.HasPrefix(st.Self.DNSSetup, "registered") {
			t.Errorf("dns_setup outside the initial namespace: %q", st.Self.DNSSetup)
		}
		if out := warren(t, true, "status", "--state", stateA); !strings.Contains(out, "dns       100.127.255.254") {
			t.Errorf("warren status:\n%s", out)
		}
		for _, server := range st.Self.DNS {
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var c net.Conn
				var err error
				inNS(t, nsA, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(server.String(), "53")) })
				return c, err
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			ips, err := r.LookupHost(ctx, "bob.warren")
			took := time.Since(start)
			names, rerr := r.LookupAddr(ctx, ipB[0])
			_, nerr := r.LookupHost(ctx, "nobody.warren")
			_, xerr := r.LookupHost(ctx, "example.com")
			cancel()
			t.Logf("via %v: bob.warren → %v in %v; %s → %v", server, ips, took.Round(time.Microsecond), ipB[0], names)
			if err != nil || strings.Join(ips, " ") != strings.Join(ipB, " ") && strings.Join(ips, " ") != ipB[1]+" "+ipB[0] {
				t.Errorf("via %v: bob.warren → %v, %v; want %v", server, ips, err, ipB)
			}
			if rerr != nil || len(names) != 1 || names[0] != "bob.warren." {
				t.Errorf("via %v: reverse %s → %v, %v", server, ipB[0], names, rerr)
			}
			var dnsErr *net.DNSError
			if !errors.As(nerr, &dnsErr) || !dnsErr.IsNotFound {
				t.Errorf("via %v: nobody.warren: %v, want not found", server, nerr)
			}
			if xerr == nil {
				t.Errorf("via %v: example.com resolved (want REFUSED)", server)
			}
		}
	})

	t.Run("localhost", func(t *testing.T) {
		// bob's services on 127.0.0.1 are reachable through its exposed ports in TUN mode too: the
		// netstack takes those flows and forwards them to loopback.
		if sum, err := fetchBlob(nsA, net.JoinHostPort(ipB[0], "7004")); err != nil || sum != sumLo {
			t.Errorf("alice → bob:7004 (127.0.0.1 only): %v (sha256 match %v)", err, sum == sumLo)
		}
		if sum, err := fetchBlob(nsA, net.JoinHostPort(ipB[1], "7004")); err != nil || sum != sumLo {
			t.Errorf("alice → bob:7004 over IPv6 (127.0.0.1 only): %v (sha256 match %v)", err, sum == sumLo)
		}
		c := udpListen(t, nsA, "0.0.0.0:0", false)
		buf := make([]byte, 2048)
		for i := range 3 {
			msg := fmt.Sprintf("game-%d", i)
			if _, err := c.WriteTo([]byte(msg), &net.UDPAddr{IP: net.ParseIP(ipB[0]), Port: 7005}); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := c.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "echo:"+msg || from.(*net.UDPAddr).IP.String() != ipB[0] {
				t.Fatalf("UDP echo on bob's 127.0.0.1:7005: %q from %v: %v", buf[:n], from, err)
			}
		}
		testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(b.stderr.String(), "nothing listens on exposed port tcp:7006") },
			"bob did not warn about tcp:7006")
		for _, port := range []string{"7000", "7001", "7004", "7005"} {
			if strings.Contains(b.stderr.String(), "exposed port tcp:"+port) || strings.Contains(b.stderr.String(), "exposed port udp:"+port) {
				t.Errorf("bob warned about port %s, which a service listens on", port)
			}
		}
	})

	t.Run("broadcast", func(t *testing.T) {
		c := udpListen(t, nsA, "0.0.0.0:0", true)
		for _, port := range []int{7001, 7003} {
			if _, err := c.WriteTo([]byte("lan-game?"), &net.UDPAddr{IP: net.IPv4(100, 127, 255, 255), Port: port}); err != nil {
				t.Fatal(err)
			}
		}
		// bob's exposed port answers from its unicast address; the reply finds alice's socket.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		n, from, err := c.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "echo:lan-game?" || from.(*net.UDPAddr).IP.String() != ipB[0] {
			t.Errorf("broadcast reply %q from %v: %v", buf[:n], from, err)
		}
		udpB3.SetReadDeadline(time.Now().Add(time.Second))
		if n, from, err := udpB3.ReadFrom(buf); err == nil {
			t.Errorf("unexposed udp:7003 got %q from %v", buf[:n], from)
		}
	})

	t.Run("tun-proxy", func(t *testing.T) {
		// carol's proxy → alice's exposed port (the stream path; alice dials it on localhost).
		var conn net.Conn
		var err error
		inNS(t, nsB, func() {
			d, _ := proxy.SOCKS5("tcp", "127.0.0.1:1080", nil, proxy.Direct)
			conn, err = d.Dial("tcp", "alice.warren:7000")
		})
		if err != nil {
			t.Fatal(err)
		}
		if sum, err := readBlob(conn); err != nil || sum != sumA {
			t.Errorf("carol → alice via SOCKS: %v (sha256 match %v)", err, sum == sumA)
		}
		// alice's kernel → carol's netstack → carol's loopback service.
		if sum, err := fetchBlob(nsA, net.JoinHostPort(ipC[0], "7100")); err != nil || sum != sumC {
			t.Errorf("alice → carol:7100: %v (sha256 match %v)", err, sum == sumC)
		}
	})

	t.Run("packet-path", func(t *testing.T) {
		// dave → alice's exposed port as IP packets: alice's kernel sends the 2 MiB in large
		// segments, which alice cuts to the MTU's for the packet path (hundreds of overlay packets).
		sentA := statusOf(t, stateA).Stats.PacketsSent
		var conn net.Conn
		var err error
		inNS(t, nsB, func() {
			d, _ := proxy.SOCKS5("tcp", "127.0.0.1:1081", nil, proxy.Direct)
			conn, err = d.Dial("tcp", net.JoinHostPort(ipA[0], "7000"))
		})
		if err != nil {
			t.Fatal(err)
		}
		if sum, err := readBlob(conn); err != nil || sum != sumA {
			t.Errorf("dave → alice:7000 on the packet path: %v (sha256 match %v)", err, sum == sumA)
		}
		if d := statusOf(t, stateA).Stats.PacketsSent - sentA; d < 1000 {
			t.Errorf("2 MiB took %d overlay packets from alice: not the packet path", d)
		}
	})

	t.Run("acl", func(t *testing.T) {
		// Rules: only carol may reach bob's tcp:7000. bob enforces them on what its TUN device
		// receives from alice's kernel, and on carol's proxied stream.
		rules := filepath.Join(t.TempDir(), "rules.json")
		os.WriteFile(rules, []byte(`{"rules": [{"from": ["carol"], "to": ["bob"], "ports": ["7000/tcp"]}]}`), 0o600)
		before := statusOf(t, stateB).Stats.DroppedACL
		warren(t, true, "network", "acl", "set", "tunnet", rules, "--state", stateA)
		start := time.Now()
		var err error
		testkit.Eventually(t, 60*time.Second, func() bool { _, err = fetchBlob(nsA, net.JoinHostPort(ipB[0], "7000")); return err != nil },
			"alice still reaches bob:7000 through the TUN device under rules that allow only carol")
		t.Logf("alice → bob:7000 refused %v after the rules were set: %v", time.Since(start).Round(time.Millisecond), err)
		if n := statusOf(t, stateB).Stats.DroppedACL; n <= before {
			t.Errorf("bob's dropped_acl stayed at %d", n)
		}
		var conn net.Conn
		inNS(t, nsB, func() {
			d, _ := proxy.SOCKS5("tcp", "127.0.0.1:1080", nil, proxy.Direct)
			conn, err = d.Dial("tcp", "bob.warren:7000")
		})
		if err != nil {
			t.Fatalf("carol → bob:7000, which the rules allow: %v", err)
		}
		if sum, err := readBlob(conn); err != nil || sum != sumB {
			t.Errorf("carol → bob via SOCKS: %v (sha256 match %v)", err, sum == sumB)
		}
		warren(t, true, "network", "acl", "clear", "tunnet", "--state", stateA)
		testkit.Eventually(t, 60*time.Second, func() bool {
			var sum [32]byte
			sum, err = fetchBlob(nsA, net.JoinHostPort(ipB[0], "7000"))
			return err == nil && sum == sumB
		}, "alice → bob:7000 after the rules were cleared: %v", later(func() any { return err }))
	})

	t.Run("cleanup", func(t *testing.T) {
		checkGone := func(what string) {
			t.Helper()
			// The overlay's prefixes are 100.64.0.0/10 and fd7a:7761:7272::/48. (A bare "fd" also
			// matches a link-local address whose random MAC holds "fd": CI failed on fe80::…:fdb8.)
			var link, r4, r6 string
			// (a.stop's SIGKILL comes only after this)
			testkit.Eventually(t, 30*time.Second, func() bool {
				link, _ = nsExec(nsA, "ip", "link", "show")
				r4, _ = nsExec(nsA, "ip", "route", "show", "table", "all")
				r6, _ = nsExec(nsA, "ip", "-6", "route", "show", "table", "all")
				return !strings.Contains(link, "warren0") && !strings.Contains(r4, "warren0") && !strings.Contains(r6, "warren0") &&
					!strings.Contains(r4, "100.64.") && !strings.Contains(r6, "fd7a:")
			}, "%s: left behind:\n%v", what, later(func() any { return link + "\n" + r4 + "\n" + r6 }))
		}
		// SIGTERM: the device goes first thing in the node's shutdown; check before any SIGKILL.
		a.cmd.Process.Signal(syscall.SIGTERM)
		checkGone("after SIGTERM")
		a.stop()

		a = startNSProc(t, nsA, "warren", upA...)
		a.line(t, "warren node")
		a.kill() // SIGKILL: the kernel deletes a non-persistent device with its last descriptor
		checkGone("after kill -9")

		// A stale persistent device of the same name (as `ip tuntap add` leaves one) is replaced.
		for _, args := range [][]string{{"tuntap", "add", "dev", "warren0", "mode", "tun"},
			{"addr", "add", "100.64.200.1/10", "dev", "warren0"}, {"link", "set", "warren0", "up"}} {
			if out, err := nsExec(nsA, append([]string{"ip"}, args...)...); err != nil {
				t.Fatalf("ip %v: %v\n%s", args, err, out)
			}
		}
		a = startNSProc(t, nsA, "warren", upA...)
		a.line(t, "warren node")
		// stderr is copied by its own goroutine: the line may arrive after stdout's "warren node".
		testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(a.stderr.String(), "removed a stale TUN device") },
			"no word about the stale device")
		waitDirect(t, stateA, "bob")
		var err error
		testkit.Eventually(t, 60*time.Second, func() bool {
			var sum [32]byte
			sum, err = fetchBlob(nsA, net.JoinHostPort(ipB[0], "7000"))
			return err == nil && sum == sumB
		}, "alice → bob after restart: %v", later(func() any { return err }))
		out, _ := nsExec(nsA, "ip", "addr", "show", "dev", "warren0")
		if strings.Contains(out, "100.64.200.1") || !strings.Contains(out, ipA[0]+"/10") {
			t.Errorf("restarted device:\n%s", out)
		}
		a.cmd.Process.Signal(syscall.SIGTERM)
		checkGone("after the restart's SIGTERM")
		a.stop()
	})

	t.Run("no-cap", func(t *testing.T) {
		needTool(t, "setpriv")
		// Root without CAP_NET_ADMIN (dropped from the bounding set, so exec cannot regain it).
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", nsA, "setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin",
			bin(t, "warren"), "up", "--coord", addr, "--coord-key", fp, "--state", filepath.Join(tmp, "nocap"), "--name", "nocap",
			"--listen", "10.99.0.1:0", "--socks", "", "--tun", "--tun-name", "warren9").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--tun needs root or CAP_NET_ADMIN: ") {
			t.Errorf("without CAP_NET_ADMIN: %v\n%s", err, out)
		}
		if link, _ := nsExec(nsA, "ip", "link", "show"); strings.Contains(link, "warren9") {
			t.Errorf("device left behind:\n%s", link)
		}
	})
}

func ipStrings(ips []netip.Addr) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// netnsPairs counts the namespace pairs this process made (netnsPair).
var netnsPairs atomic.Uint64

// netnsPair creates two network namespaces joined by a veth pair, 10.99.0.1/24 and 10.99.0.2/24;
// they are deleted (with everything in them) when the test ends, failed or not. Names carry the
// process ID and a count, so parallel tests (and test binaries) each get their own pair.
func netnsPair(t *testing.T) (string, string) {
	t.Helper()
	id := fmt.Sprintf("%dx%d", os.Getpid()%100000, netnsPairs.Add(1)) // veth names: 15 bytes at most
	a, b := "wtun-a-"+id, "wtun-b-"+id
	va, vb := "wta"+id, "wtb"+id
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", a).Run()
		exec.Command("ip", "netns", "del", b).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", a}, {"netns", "add", b},
		{"link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b},
		{"-n", a, "addr", "add", "10.99.0.1/24", "dev", va}, {"-n", b, "addr", "add", "10.99.0.2/24", "dev", vb},
		{"-n", a, "link", "set", va, "up"}, {"-n", b, "link", "set", vb, "up"},
		{"-n", a, "link", "set", "lo", "up"}, {"-n", b, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return a, b
}

// tcpBlob serves size random bytes to every connection on addr inside ns; it returns their sha256.
func tcpBlob(t *testing.T, ns, addr string, size int) [32]byte {
	return serveBlob(t, ns, addr, size, 30*time.Second)
}

// fetchBlob connects to addr from inside ns and hashes everything it reads.
func fetchBlob(ns, addr string) ([32]byte, error) {
	var c net.Conn
	var err error
	if nerr := enterNS(ns, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) }); nerr != nil {
		return [32]byte{}, nerr
	}
	if err != nil {
		return [32]byte{}, err
	}
	return readBlob(c)
}

func readBlob(c net.Conn) ([32]byte, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}
