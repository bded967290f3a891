package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
)

// proxyV2Echo serves a TCP port that expects a PROXY protocol v2 header (TCP over IPv4) first on
// every connection and answers "SRC SEEN\n": the source address the header carries and the client
// address the service itself saw. It then holds the connection until the client closes it.
func proxyV2Echo(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil || h[12] != 0x21 || h[13] != 0x11 {
			fmt.Fprintf(c, "bad header %x %v\n", h, err)
			return
		}
		a := make([]byte, binary.BigEndian.Uint16(h[14:16]))
		if _, err := io.ReadFull(c, a); err != nil || len(a) < 12 {
			fmt.Fprintf(c, "bad addresses %x %v\n", a, err)
			return
		}
		src := netip.AddrFrom4([4]byte(a[0:4]))
		fmt.Fprintf(c, "%v %v\n", src, c.RemoteAddr())
		c.SetReadDeadline(time.Time{})
		io.Copy(io.Discard, c)
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// TestExposeProxyHeaderAndWhois: bob exposes a port with +proxy; alice connects through her SOCKS
// proxy, over the stream path and over the packet path (the netstack's forwarder). The service gets
// a PROXY v2 header naming alice's overlay IP, `warren whois` at bob names alice for the client
// address the service saw, until the connection closes, and `warren status` lists the port.
func TestExposeProxyHeaderAndWhois(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	t.Run("stream", func(t *testing.T) { testProxyHeaderAndWhois(t) })
	t.Run("packet", func(t *testing.T) { testProxyHeaderAndWhois(t, "--packet-path") })
}

func testProxyHeaderAndWhois(t *testing.T, aliceFlags ...string) {
	tmp := t.TempDir()
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr, fp := coord.line(t, "warren-coord listening on"), coord.line(t, "key")
	port := proxyV2Echo(t)
	up := func(name string, extra ...string) string {
		state := filepath.Join(tmp, name)
		startProc(t, "warren", append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name,
			"--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0"}, extra...)...)
		waitLoggedIn(t, state)
		return state
	}
	bob := up("bob", "--expose", fmt.Sprintf("tcp:%d+proxy", port))
	warren(t, true, "network", "create", "lan", "--open", "--state", bob)
	alice := up("alice", aliceFlags...)
	warren(t, true, "network", "join", "lan", "--state", alice)
	waitPeer(t, alice, "bob", "bob online at alice", 20*time.Second, online)

	if out := warren(t, true, "status", "--state", bob); !strings.Contains(out, fmt.Sprintf("tcp:%d+proxy", port)) {
		t.Errorf("status does not list the exposed port:\n%s", out)
	}
	aliceIP := statusOf(t, alice).Self.IPs[0]
	d, err := proxy.SOCKS5("tcp", statusOf(t, alice).Self.SOCKS, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", net.JoinHostPort("bob.warren", fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	src, seen, _ := strings.Cut(strings.TrimSpace(line), " ")
	if src != aliceIP.String() {
		t.Fatalf("PROXY header source %q (line %q), want alice's %v", src, line, aliceIP)
	}
	out := warren(t, true, "whois", seen, "--state", bob)
	if !strings.Contains(out, "alice") || !strings.Contains(out, aliceIP.String()) {
		t.Errorf("whois %s at bob:\n%s", seen, out)
	}
	// The entry goes with the connection.
	c.Close()
	testkit.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(warren(t, false, "whois", seen, "--state", bob), "not a connection from a peer")
	}, "whois at bob still names %s after the connection closed", seen)
}
