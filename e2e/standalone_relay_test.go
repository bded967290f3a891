package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/node/localapi"
)

// tapNAT stands in front of the standalone relay like a NAT with a port per client: every client
// address gets its own upstream socket towards the relay, so the relay sees one stable address per
// node (its login and its frames come from the same one). It sees every byte between the nodes and
// the relay, which lets the test show that nothing on that path carries plaintext.
type tapNAT struct {
	ln     *net.UDPConn
	relay  *net.UDPAddr
	marker []byte
	done   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	up       map[netip.AddrPort]*net.UDPConn
	relayed  int                                 // payload bytes of relay frames, both directions
	seen     bool                                // the marker appeared in some packet
	fromKeys map[netip.AddrPort]map[[32]byte]int // senders of the relay frames delivered to each client
}

func newTapNAT(t *testing.T, relay string, marker []byte) *tapNAT {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp4", relay)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n := &tapNAT{ln: ln, relay: ra, marker: marker, done: make(chan struct{}), up: make(map[netip.AddrPort]*net.UDPConn),
		fromKeys: make(map[netip.AddrPort]map[[32]byte]int)}
	n.wg.Add(1)
	go n.downLoop()
	t.Cleanup(n.close)
	return n
}

func (n *tapNAT) addr() string { return n.ln.LocalAddr().String() }

func (n *tapNAT) close() {
	close(n.done)
	n.ln.Close()
	n.mu.Lock()
	for _, c := range n.up {
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// rebind gives every client a new upstream port, as a NAT that lost its mappings would: the relay
// sees each node come from a new address and must follow it.
func (n *tapNAT) rebind() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for a, c := range n.up {
		c.Close()
		delete(n.up, a)
	}
}

// inspect records what one packet shows; toClient is set for packets from the relay.
func (n *tapNAT) inspect(b []byte, toClient netip.AddrPort) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if bytes.Contains(b, n.marker) {
		n.seen = true
	}
	kind, key, payload, err := control.ParseRelay(b)
	if err != nil {
		return
	}
	n.relayed += len(payload)
	if kind == control.KindRelayFrom && toClient.IsValid() {
		if n.fromKeys[toClient] == nil {
			n.fromKeys[toClient] = make(map[[32]byte]int)
		}
		n.fromKeys[toClient][[32]byte(key)]++
	}
}

func (n *tapNAT) stats() (relayed int, seen bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.relayed, n.seen
}

// delivered counts the relay frames from sender that reached the client at addr.
func (n *tapNAT) delivered(addr netip.AddrPort, sender []byte) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fromKeys[addr][[32]byte(sender)]
}

// downLoop carries client → relay packets, opening an upstream socket per new client.
func (n *tapNAT) downLoop() {
	defer n.wg.Done()
	buf := make([]byte, 2048)
	for {
		k, from, err := n.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		n.inspect(buf[:k], netip.AddrPort{})
		n.mu.Lock()
		up := n.up[from]
		if up == nil {
			if up, err = net.DialUDP("udp4", nil, n.relay); err != nil {
				n.mu.Unlock()
				continue
			}
			n.up[from] = up
			n.wg.Add(1)
			go n.upLoop(up, from)
		}
		n.mu.Unlock()
		up.Write(buf[:k])
	}
}

// upLoop carries relay → client packets for one client.
func (n *tapNAT) upLoop(up *net.UDPConn, client netip.AddrPort) {
	defer n.wg.Done()
	buf := make([]byte, 2048)
	for {
		k, err := up.Read(buf)
		if err != nil {
			select {
			case <-n.done:
				return
			default:
			}
			if !isRefused(err) {
				return // closed by rebind
			}
			continue
		}
		n.inspect(buf[:k], client)
		n.ln.WriteToUDPAddrPort(buf[:k], client)
	}
}

func isRefused(err error) bool { return bytes.Contains([]byte(err.Error()), []byte("refused")) }

// socksHTTP is an HTTP client whose connections go through a node's SOCKS5 proxy.
func socksHTTP(t *testing.T, socksAddr string) *http.Client {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", socksAddr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.(proxy.ContextDialer).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// waitPeerPath waits until the node with state dir sees peer name on path through endpoint.
func waitPeerPath(t *testing.T, state, name, path, endpoint string) {
	t.Helper()
	var st localapi.Status
	var err error
	testkit.Eventually(t, 60*time.Second, func() bool {
		st, err = cliStatus(state)
		return err == nil && peerPath(st, name) == path && peerEndpoint(st, name) == endpoint
	}, "%s: peer %s never on path %s via %s (last: %v)", state, name, path, endpoint,
		later(func() any { return fmt.Sprintf("%s via %s, %v", peerPath(st, name), peerEndpoint(st, name), err) }))
}

// TestStandaloneRelay: a coord without its own relay announces a standalone relay (warren-coord relay);
// two nodes that may not use direct paths log in to it and move data both ways through it, via SOCKS.
// Everything between the nodes and the relay passes a tap: no plaintext marker appears. A stranger
// that logs in to the relay naming a node, which does not name it, gets nothing forwarded to that
// node. After the coord stops, relayed traffic keeps flowing.
func TestStandaloneRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	relay := startProc(t, "warren-coord", "relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay", "key.pem"))
	relayAddr := relay.line(t, "warren-coord relay listening on")
	relayFP := relay.line(t, "key")

	m := make([]byte, 16)
	rand.Read(m)
	marker := []byte(hex.EncodeToString(m))
	tap := newTapNAT(t, relayAddr, marker)

	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--no-relay",
		"--relay", tap.addr()+"="+relayFP)
	coordAddr := coord.line(t, "warren-coord listening on")

	const size = 8 << 20
	portA, portB := markerServer(t, marker, size), markerServer(t, marker, size)
	socksA, socksB := freePort(t), freePort(t)
	stateA, stateB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	for _, n := range []struct {
		state, name     string
		socks, httpPort int
	}{{stateA, "a", socksA, int(portA)}, {stateB, "b", socksB, int(portB)}} {
		startProc(t, "warren", "up", "--coord", coordAddr, "--state", n.state, "--name", n.name, "--listen", "127.0.0.1:0",
			"--no-direct", "--socks", fmt.Sprintf("127.0.0.1:%d", n.socks), "--expose", fmt.Sprintf("tcp:%d", n.httpPort))
	}
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "lan", "--state", stateA, "--password", "pw")
	warren(t, true, "network", "join", "lan", "--state", stateB, "--password", "pw")
	waitPeerPath(t, stateA, "b", "relay", tap.addr())
	waitPeerPath(t, stateB, "a", "relay", tap.addr())

	get := func(from int, to string, port uint16) time.Duration {
		t.Helper()
		start := time.Now()
		resp, err := socksHTTP(t, fmt.Sprintf("127.0.0.1:%d", from)).Get(fmt.Sprintf("http://%s.warren:%d/", to, port))
		if err != nil {
			t.Fatalf("GET from %s through the relay: %v", to, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(body) != size || !bytes.HasPrefix(body, marker) {
			t.Fatalf("fetched %d bytes from %s (%v), want %d bytes of the marker", len(body), to, err, size)
		}
		return time.Since(start)
	}
	d := get(socksA, "b", portB)
	t.Logf("8 MiB b→a through the standalone relay: %v, %.1f MB/s", d, size/d.Seconds()/1e6)
	d = get(socksB, "a", portA)
	t.Logf("8 MiB a→b through the standalone relay: %v, %.1f MB/s", d, size/d.Seconds()/1e6)
	relayed, seen := tap.stats()
	if relayed < 2*size {
		t.Errorf("%d bytes of relay frames passed the relay, less than the 16 MiB moved: did the data take another path?", relayed)
	}
	if seen {
		t.Fatal("plaintext on the way to or from the relay: the marker appeared in a packet")
	}

	// netcheck measures the relay the coord announced and says it is in use.
	var nc localapi.Netcheck
	if err := json.Unmarshal([]byte(warren(t, true, "netcheck", "--json", "--state", stateA)), &nc); err != nil {
		t.Fatal(err)
	}
	if nc.Relay != tap.addr() || len(nc.Relays) != 1 || !nc.Relays[0].OK || !nc.Relays[0].InUse || nc.Relays[0].RTTms <= 0 {
		t.Errorf("netcheck = %+v, want relay %s measured and in use", nc, tap.addr())
	}

	// A stranger logs in naming a; a names only b, so nothing of the stranger's reaches a.
	st, err := cliStatus(stateA)
	if err != nil {
		t.Fatal(err)
	}
	aAddr := netip.MustParseAddrPort(st.Self.Endpoint)
	aKey, _, err := identity.LoadOrCreate(filepath.Join(stateA, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	strangerKey := strangerLogin(t, tap.addr(), relayFP, aKey.Public())
	bKey, _, err := identity.LoadOrCreate(filepath.Join(stateB, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if tap.delivered(aAddr, bKey.Public()) == 0 {
		t.Fatalf("the tap saw no frames from b delivered to a at %s: it cannot judge what a receives", aAddr)
	}
	if n := tap.delivered(aAddr, strangerKey); n != 0 {
		t.Fatalf("the relay forwarded %d frames from a stranger a never named", n)
	}

	// The coord goes away; relayed traffic keeps flowing.
	coord.stop()
	testkit.Eventually(t, 60*time.Second, func() bool { return !statusOf(t, stateA).Coord.Connected }, "a still connected to the stopped coord")
	before, _ := tap.stats()
	d = get(socksA, "b", portB)
	t.Logf("8 MiB b→a through the standalone relay with the coord stopped: %v, %.1f MB/s", d, size/d.Seconds()/1e6)
	if after, _ := tap.stats(); after-before < size {
		t.Errorf("only %d bytes passed the relay after the coord stopped", after-before)
	}
	if p := peerPath(statusOf(t, stateA), "b"); p != "relay" {
		t.Errorf("path to b after the coord stopped = %s, want relay", p)
	}

	// Both nodes' NAT mappings towards the relay change (still without a coord): the relay follows
	// their connections to the new addresses and the relayed link carries on.
	tap.rebind()
	d = get(socksB, "a", portA)
	t.Logf("8 MiB a→b through the standalone relay after both nodes' addresses changed: %v, %.1f MB/s", d, size/d.Seconds()/1e6)
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(relay.stderr.String(), "node address changed") },
		"the relay never logged that it followed a node to a new address")
}

// strangerLogin logs a fresh key in to the relay at addr (pinning relayFP), naming target, and sends
// frames to target for a while. It returns the stranger's key.
func strangerLogin(t *testing.T, addr, relayFP string, target []byte) []byte {
	t.Helper()
	key, _ := identity.Generate()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	defer func() { tr.Close(); pc.Close() }()
	tlsConf, _ := identity.TLSConfig(key, control.RelayALPN, false, func(pub ed25519.PublicKey) error {
		if identity.Fingerprint(pub) != relayFP {
			return fmt.Errorf("relay key %s, want %s", identity.Fingerprint(pub), relayFP)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ra, _ := net.ResolveUDPAddr("udp4", addr)
	conn, err := tr.Dial(ctx, ra, tlsConf, &quic.Config{})
	if err != nil {
		t.Fatalf("stranger: dial relay: %v", err)
	}
	defer conn.CloseWithError(0, "")
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := control.AppendRelayConsent(nil, [][]byte{target})
	stream.Write(list)
	stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ok [1]byte
	if _, err := io.ReadFull(stream, ok[:]); err != nil || ok[0] != control.RelayLoginOK {
		t.Fatalf("stranger: relay login not accepted: %v", err)
	}
	frame := control.AppendRelay(nil, control.KindRelayTo, target, bytes.Repeat([]byte{0x40}, 1200))
	for range 50 {
		tr.WriteTo(frame, ra)
		time.Sleep(10 * time.Millisecond) // a steady stream, not a burst
	}
	// The relay takes packets in order: once it answers a binding request sent after the frames,
	// anything it forwarded of them has passed the tap.
	// Asked again every second (a datagram may be lost), with its own safety net: the login's 10 s
	// may be spent on a loaded machine.
	tx := [control.TxIDSize]byte{0x5a}
	answer, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	buf := make([]byte, 2048)
	for {
		tr.WriteTo(control.AppendBindingRequest(nil, tx), ra)
		wait, cancelWait := context.WithTimeout(answer, time.Second)
		n, _, err := tr.ReadNonQUICPacket(wait, buf)
		cancelWait()
		if err != nil {
			if answer.Err() != nil {
				t.Fatalf("stranger: no answer to a binding request: %v", err)
			}
			continue
		}
		if got, _, err := control.ParseBindingResponse(buf[:n]); err == nil && got == tx {
			return key.Public()
		}
	}
}

// waitFor waits until cond holds, or fails the test after d naming what, and returns how long it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	testkit.Eventually(t, d, cond, "%s", what)
	return time.Since(start)
}

// relayLogin returns the node's login state at the relay addr, as `warren netcheck --json` shows it.
func relayLogin(t *testing.T, state, addr string) string {
	t.Helper()
	var nc localapi.Netcheck
	if err := json.Unmarshal([]byte(warren(t, true, "netcheck", "--json", "--state", state)), &nc); err != nil {
		t.Fatal(err)
	}
	for _, r := range nc.Relays {
		if r.Addr == addr {
			return r.Login
		}
	}
	return ""
}

// TestStandaloneRelayBlockList: the relay's operator adds the node's address range to the relay's
// block list file (--blocklist, hot reloaded): the logged-in node is disconnected, its logins are
// refused, and the node's user sees why in the node's log and in `warren netcheck` (where the relay
// also no longer answers binding requests). Taken off the list, the node logs in again.
func TestStandaloneRelayBlockList(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	tmp := t.TempDir()
	blockFile := filepath.Join(tmp, "relay-blocklist")
	if err := os.WriteFile(blockFile, []byte("# nobody yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := startProc(t, "warren-coord", "relay", "--listen", "127.0.0.1:0", "--key", filepath.Join(tmp, "relay", "key.pem"),
		"--blocklist", blockFile)
	relayAddr := relay.line(t, "warren-coord relay listening on")
	relayFP := relay.line(t, "key")
	coord := startProc(t, "warren-coord", "--listen", "127.0.0.1:0", "--data", filepath.Join(tmp, "coord"), "--no-relay",
		"--relay", relayAddr+"="+relayFP)
	coordAddr := coord.line(t, "warren-coord listening on")
	state := filepath.Join(tmp, "a")
	node := startProc(t, "warren", "up", "--coord", coordAddr, "--state", state, "--name", "a", "--listen", "127.0.0.1:0", "--no-direct")
	waitLoggedIn(t, state)
	waitFor(t, 10*time.Second, "login to the relay", func() bool { return relayLogin(t, state, relayAddr) == "logged in" })

	if err := os.WriteFile(blockFile, []byte("# loopback abusers\n127.0.0.0/8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const reason = "logins from this address are blocked by the relay operator"
	d := waitFor(t, 15*time.Second, "the node shows the relay's refusal", func() bool {
		return relayLogin(t, state, relayAddr) == "refused: "+reason
	})
	t.Logf("block list edited → node shows the refusal after %v", d.Round(time.Millisecond))
	for _, want := range []string{"address blocked by the relay operator", reason} {
		if !strings.Contains(node.stderr.String(), want) {
			t.Errorf("the node's log does not say %q", want)
		}
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(relay.stderr.String(), "disconnecting node: its address is blocked")
	}, "the relay never logged that it disconnected the node")
	out := warren(t, true, "netcheck", "--state", state)
	t.Logf("warren netcheck:\n%s", out)
	if !strings.Contains(out, relayAddr+", no answer; refused: "+reason) {
		t.Errorf("netcheck does not show the blocked relay as unanswering and refusing")
	}

	if err := os.WriteFile(blockFile, []byte("# nobody again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, 30*time.Second, "login to the relay after the unblock", func() bool { return relayLogin(t, state, relayAddr) == "logged in" })
	t.Logf("unblocked → logged in again after %v (the node's retry backoff)", d.Round(time.Millisecond))
}
