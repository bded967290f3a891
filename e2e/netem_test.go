package e2e

import (
	"container/heap"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/tun"
)

// impairment is what `tc qdisc ... netem` does to a path, per direction: it loses a share of the
// packets, delays the rest by delay±jitter (uniformly; the jitter itself reorders packets), and sends a
// share of them at once, ahead of the delayed ones (netem's "reorder").
type impairment struct {
	loss          float64
	delay, jitter time.Duration
	reorder       float64
}

// lossy is the path of TestLossAndDelay (issue 4, item 6), on both ends.
var lossy = impairment{loss: 0.05, delay: 50 * time.Millisecond, jitter: 10 * time.Millisecond, reorder: 0.01}

func (m impairment) netemArgs() []string {
	return []string{"netem", "loss", fmt.Sprintf("%g%%", m.loss*100), "delay", m.delay.String(), m.jitter.String(),
		"reorder", fmt.Sprintf("%g%%", m.reorder*100)}
}

// needNetnsTC skips the test unless it may run the binaries in network namespaces with tc (root).
func needNetnsTC(t *testing.T, what string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binaries in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and " + what)
	}
	needTool(t, "ip", "tc")
}

// impairedPath joins two namespaces by a path that can be impaired: tc netem on the veth pair of
// netnsPair where the kernel has sch_netem (CI), else a userspace wire (see wire) with the same
// impairment. a and b are the addresses at either end; nodes bound to them talk across the path.
type impairedPath struct {
	nsA, nsB string
	a, b     netip.Addr
	wire     *wire // nil with tc netem
}

func newImpairedPath(t *testing.T) *impairedPath {
	t.Helper()
	nsA, nsB := netnsPair(t)
	p := &impairedPath{nsA: nsA, nsB: nsB, a: netip.MustParseAddr("10.99.0.1"), b: netip.MustParseAddr("10.99.0.2")}
	if out, err := nsExec(nsA, "tc", "qdisc", "replace", "dev", vethIn(t, nsA), "root", "netem", "delay", "0ms"); err != nil {
		t.Logf("no tc netem here (%s): a userspace wire between two TUN devices does netem's work", strings.TrimSpace(out))
		p.wire = newWire(t, nsA, nsB)
		p.a, p.b = netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("10.98.0.2")
	}
	return p
}

// impair applies m to both directions of the path.
func (p *impairedPath) impair(t *testing.T, m impairment) {
	t.Helper()
	if p.wire != nil {
		p.wire.spec.Store(&m)
		t.Logf("userspace wire: each direction now behaves like netem %s", strings.Join(m.netemArgs()[1:], " "))
		return
	}
	for _, ns := range []string{p.nsA, p.nsB} {
		args := append([]string{"tc", "qdisc", "replace", "dev", vethIn(t, ns), "root"}, m.netemArgs()...)
		if out, err := nsExec(ns, args...); err != nil {
			t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
		}
	}
	t.Logf("tc qdisc replace dev ... root %s, on both ends", strings.Join(m.netemArgs(), " "))
}

// vethIn names the veth device inside ns.
func vethIn(t *testing.T, ns string) string {
	t.Helper()
	out, err := nsExec(ns, "ip", "-o", "link", "show", "type", "veth")
	fields := strings.SplitN(out, ":", 3)
	if err != nil || len(fields) < 3 {
		t.Fatalf("no veth in %s: %v\n%s", ns, err, out)
	}
	dev, _, _ := strings.Cut(strings.TrimSpace(fields[1]), "@")
	return dev
}

// wire is a point-to-point link between two namespaces made of two TUN devices, 10.98.0.1/24 in the
// first and 10.98.0.2/24 in the second, whose packets this process carries across, impaired like
// netem (loss, delay±jitter in a time-ordered queue, immediate sends for reordering) once spec is set.
// A direction holds at most 1000 packets in flight, netem's default limit; beyond it packets drop.
type wire struct {
	spec  atomic.Pointer[impairment] // nil = a clean wire
	lanes [2]*lane
	lost  atomic.Uint64 // packets dropped by the impairment
	full  atomic.Uint64 // packets dropped for a full queue
	done  chan struct{}
	wg    sync.WaitGroup
}

type lane struct {
	in  chan held
	out *tun.Device
}

type held struct {
	at  time.Time
	seq uint64
	pkt []byte
}

// heldQueue orders held packets by send time (then arrival), like netem's tfifo.
type heldQueue []held

func (q heldQueue) Len() int { return len(q) }
func (q heldQueue) Less(i, j int) bool {
	return q[i].at.Before(q[j].at) || (q[i].at.Equal(q[j].at) && q[i].seq < q[j].seq)
}
func (q heldQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *heldQueue) Push(x any)   { *q = append(*q, x.(held)) }
func (q *heldQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

func newWire(t *testing.T, nsA, nsB string) *wire {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs tc netem or /dev/net/tun")
	}
	w := &wire{done: make(chan struct{}), lanes: [2]*lane{{in: make(chan held, 1000)}, {in: make(chan held, 1000)}}}
	id := os.Getpid() % 100000
	var seq atomic.Uint64
	for i, end := range []struct {
		ns, name, addr string
	}{{nsA, fmt.Sprintf("wla%d", id), "10.98.0.1/24"}, {nsB, fmt.Sprintf("wlb%d", id), "10.98.0.2/24"}} {
		to := w.lanes[i] // what end i's kernel sends travels on lane i to the other end
		var dev *tun.Device
		var err error
		inNS(t, end.ns, func() {
			dev, err = tun.Open(tun.Config{Name: end.name, Addrs: []netip.Prefix{netip.MustParsePrefix(end.addr)}, MTU: 1500,
				Receive: func(pkt []byte) { w.carry(to, seq.Add(1), pkt) }})
		})
		if err != nil {
			t.Fatal(err)
		}
		w.lanes[1-i].out = dev
		t.Cleanup(func() { enterNS(end.ns, func() { dev.Close() }) }) // in its namespace: Close deletes by index
	}
	for _, l := range w.lanes {
		w.wg.Add(1)
		go w.run(l)
	}
	t.Cleanup(func() {
		close(w.done)
		w.wg.Wait()
		t.Logf("userspace wire: %d packets lost on purpose, %d dropped for a full queue", w.lost.Load(), w.full.Load())
	})
	return w
}

// carry impairs one packet and queues it on lane l. It runs on the sending device's reader.
func (w *wire) carry(l *lane, seq uint64, pkt []byte) {
	at := time.Now()
	if m := w.spec.Load(); m != nil {
		if mrand.Float64() < m.loss {
			w.lost.Add(1)
			return
		}
		if mrand.Float64() >= m.reorder {
			at = at.Add(m.delay - m.jitter + time.Duration(mrand.Int64N(int64(2*m.jitter)+1)))
		}
	}
	select {
	case l.in <- held{at: at, seq: seq, pkt: append([]byte(nil), pkt...)}:
	default:
		w.full.Add(1)
	}
}

// run delivers lane l's packets when they are due.
func (w *wire) run(l *lane) {
	defer w.wg.Done()
	var q heldQueue
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		for len(q) > 0 && !q[0].at.After(now) {
			l.out.Write(heap.Pop(&q).(held).pkt)
		}
		if len(q) > 0 {
			timer.Reset(q[0].at.Sub(now))
		}
		select {
		case <-w.done:
			return
		case h := <-l.in:
			heap.Push(&q, h)
		case <-timer.C:
		}
	}
}

// TestLossAndDelay runs a coord and three nodes in two network namespaces joined by an impaired path
// (5% loss, 50±10 ms delay, some reordering, each direction: tc netem on a veth pair, or the same done
// in userspace where the kernel lacks netem) and moves a blob from bob to the others through SOCKS, on
// the stream path (alice, the default) and on the packet path (anna, --packet-path) at once; each must
// arrive intact (sha256). The goodput is logged.
//
// At 5% random loss and 100 ms RTT a loss-based congestion controller (quic-go's Cubic on the stream
// path; gVisor's TCP inside, and quic-go's outside, on the packet path) manages about 1 and 0.5
// Mbit/s (Mathis: MSS/RTT × 1.22/√p ≈ 0.6 Mbit/s), so the 16 MiB take 3 and 5 minutes. By
// default the stream path moves the full 16 MiB (about 3 minutes, overlapping the coord outage test)
// and the packet path 2 MiB; WARREN_LOSS_MIB=N (with -timeout 20m) moves N MiB on both.
func TestLossAndDelay(t *testing.T) {
	needNetnsTC(t, "tc netem qdiscs (or TUN devices)")
	t.Parallel() // mostly waiting on a slow link: overlaps the coord outage test
	streamMiB, packetMiB := 16, 2
	if s := os.Getenv("WARREN_LOSS_MIB"); s != "" {
		if _, err := fmt.Sscan(s, &streamMiB); err != nil || streamMiB < 1 || streamMiB > 64 {
			t.Fatalf("WARREN_LOSS_MIB=%q: want 1..64", s)
		}
		packetMiB = streamMiB
	}
	// Fails below ~0.14 Mbit/s: measured 0.77–0.83 (stream) and 0.36–0.43 (packet) alone, and the
	// packet path ran out of 80 s for 2 MiB beside the other parallel tests on a busy 2-core machine.
	limitFor := func(mib int) time.Duration { return time.Duration(mib) * 60 * time.Second }
	p := newImpairedPath(t)
	nsA, nsB := p.nsA, p.nsB
	tmp := t.TempDir()

	coord := startNSProc(t, nsA, "warren-coord", "--listen", p.a.String()+":0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	sums := map[int][32]byte{
		7000: serveBlob(t, nsB, "127.0.0.1:7000", streamMiB<<20, limitFor(streamMiB)+10*time.Second),
		7001: serveBlob(t, nsB, "127.0.0.1:7001", packetMiB<<20, limitFor(packetMiB)+10*time.Second),
	}
	stateA, stateP, stateB := filepath.Join(tmp, "alice"), filepath.Join(tmp, "anna"), filepath.Join(tmp, "bob")
	up := func(state, name string, at netip.Addr, extra ...string) []string {
		return append([]string{"up", "--coord", addr, "--coord-key", fp, "--state", state, "--name", name, "--listen", at.String() + ":0"}, extra...)
	}
	startNSProc(t, nsB, "warren", up(stateB, "bob", p.b, "--socks", "", "--expose", "tcp:7000,tcp:7001")...)
	startNSProc(t, nsA, "warren", up(stateA, "alice", p.a, "--socks", "127.0.0.1:1080")...)
	startNSProc(t, nsA, "warren", up(stateP, "anna", p.a, "--socks", "127.0.0.1:1081", "--packet-path")...)
	for _, s := range []string{stateA, stateP, stateB} {
		waitLoggedIn(t, s)
	}
	warren(t, true, "network", "create", "lossy", "--state", stateB, "--open")
	warren(t, true, "network", "join", "lossy", "--state", stateA)
	warren(t, true, "network", "join", "lossy", "--state", stateP)
	waitDirect(t, stateA, "bob")
	waitDirect(t, stateP, "bob")

	p.impair(t, lossy)
	if out, err := nsExec(nsA, "ping", "-c", "20", "-i", "0.05", p.b.String()); err == nil || strings.Contains(out, "received") {
		t.Logf("ping across the impaired path:\n%s", lastLines(out, 2))
	}

	type result struct {
		path string
		mib  int
		d    time.Duration
		n    int64
		ok   bool
		err  error
	}
	results := make(chan result)
	paths := []struct {
		path, socks string
		port, mib   int
	}{{"stream path", "127.0.0.1:1080", 7000, streamMiB}, {"packet path", "127.0.0.1:1081", 7001, packetMiB}}
	for _, c := range paths {
		go func() {
			start := time.Now()
			got, n, err := socksBlob(nsA, c.socks, fmt.Sprintf("bob.warren:%d", c.port), limitFor(c.mib))
			results <- result{c.path, c.mib, time.Since(start), n, got == sums[c.port], err}
		}()
	}
	for range paths {
		r := <-results
		mib, size := r.mib, r.mib<<20
		if r.err != nil || r.n != int64(size) || !r.ok {
			t.Errorf("%s: %d MiB through SOCKS: %d bytes in %v, sha256 match %v: %v", r.path, mib, r.n, r.d.Round(time.Millisecond), r.ok, r.err)
			for _, s := range []string{stateA, stateP} {
				st := statusOf(t, s)
				t.Logf("%s now: peers %+v, stats %+v", st.Self.Name, st.Peers, st.Stats)
			}
			continue
		}
		t.Logf("%s: %d MiB intact in %v: goodput %.2f Mbit/s", r.path, mib, r.d.Round(time.Millisecond), float64(size)*8/r.d.Seconds()/1e6)
	}
	for _, s := range []string{stateP, stateB} {
		st := statusOf(t, s)
		t.Logf("%s: %+v", st.Self.Name, st.Stats)
	}
}

// serveBlob serves size random bytes to every connection on addr inside ns, each for at most limit,
// and returns their sha256.
func serveBlob(t *testing.T, ns, addr string, size int, limit time.Duration) [32]byte {
	t.Helper()
	blob := make([]byte, size)
	rand.Read(blob)
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(limit))
		c.Write(blob)
	})
	return sha256.Sum256(blob)
}

// socksBlob connects to target through the SOCKS5 proxy at socksAddr inside ns and hashes everything
// it reads, for at most limit.
func socksBlob(ns, socksAddr, target string, limit time.Duration) (sum [32]byte, n int64, err error) {
	var c net.Conn
	if nerr := enterNS(ns, func() {
		d, _ := proxy.SOCKS5("tcp", socksAddr, nil, &net.Dialer{Timeout: 5 * time.Second})
		c, err = d.Dial("tcp", target)
	}); nerr != nil {
		return sum, 0, nerr
	}
	if err != nil {
		return sum, 0, fmt.Errorf("dial %s via %s: %w", target, socksAddr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	h := sha256.New()
	n, err = io.Copy(h, c)
	return [32]byte(h.Sum(nil)), n, err
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestFullQueueDrops floods a slow link: alice sends UDP through SOCKS (the packet path) to bob's
// exposed port at 10 times what the veth between them carries (tc tbf, 2 Mbit/s). Her node must keep
// reading the flood rather than block on the link: every datagram is either sent on or dropped and
// counted (dropped_queue_full in `warren status --json`), and the link works normally afterwards.
func TestFullQueueDrops(t *testing.T) {
	needNetnsTC(t, "a tc qdisc")
	nsA, nsB := netnsPair(t)
	tmp := t.TempDir()
	coord := startNSProc(t, nsA, "warren-coord", "--listen", "10.99.0.1:0", "--data", filepath.Join(tmp, "coord"))
	addr := coord.line(t, "warren-coord listening on")
	fp := coord.line(t, "key")

	sink := udpListen(t, nsB, "127.0.0.1:7001", false)
	var received, afterFlood atomic.Int64 // datagrams, and those that say "after"
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := sink.ReadFrom(buf)
			if err != nil {
				return
			}
			received.Add(1)
			if string(buf[:n]) == "after" {
				afterFlood.Add(1)
			}
		}
	}()
	stateA, stateB := filepath.Join(tmp, "alice"), filepath.Join(tmp, "bob")
	startNSProc(t, nsB, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateB, "--name", "bob", "--listen", "10.99.0.2:0",
		"--socks", "", "--expose", "udp:7001")
	startNSProc(t, nsA, "warren", "up", "--coord", addr, "--coord-key", fp, "--state", stateA, "--name", "alice", "--listen", "10.99.0.1:0",
		"--socks", "127.0.0.1:1080")
	waitLoggedIn(t, stateA)
	waitLoggedIn(t, stateB)
	warren(t, true, "network", "create", "slow", "--state", stateB, "--open")
	warren(t, true, "network", "join", "slow", "--state", stateA)
	waitDirect(t, stateA, "bob")

	tbf := []string{"tc", "qdisc", "replace", "dev", vethIn(t, nsA), "root", "tbf", "rate", "2mbit", "burst", "16kb", "latency", "50ms"}
	if out, err := nsExec(nsA, tbf...); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(tbf, " "), err, out)
	}
	var u *socksUDP
	var err error
	inNS(t, nsA, func() { u, err = dialSocksUDP("127.0.0.1:1080") })
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()

	before := statusOf(t, stateA).Stats
	const flood, perTick, rate = 5000, 25, 2500 // 1000-byte datagrams, 2500/s for 2 s: 20 Mbit/s into 2 Mbit/s
	payload := strings.Repeat("x", 1000)
	start := time.Now()
	for i := 0; i < flood; i += perTick {
		for range perTick {
			u.sendTo("bob.warren", 7001, payload)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+perTick) * time.Second / rate)))
	}
	took := time.Since(start)
	time.Sleep(time.Second) // the node's queue drains into the link
	after := statusOf(t, stateA).Stats
	sent, dropped := after.PacketsSent-before.PacketsSent, after.DroppedQueueFull-before.DroppedQueueFull
	t.Logf("%d datagrams in %v through a 2 Mbit/s link: alice sent %d on, dropped %d for a full queue; bob's service received %d",
		flood, took.Round(time.Millisecond), sent, dropped, received.Load())
	if dropped == 0 {
		t.Error("no packet was dropped for a full queue: the flood never outran the link?")
	}
	// The node kept reading: what it neither sent nor dropped was lost in front of it, in the proxy's
	// UDP socket buffer, which overflows only when the reader falls behind: a node blocked on the link
	// takes about what the link carries (here 13%); a busy machine may delay a non-blocking one a
	// little.
	if sent+dropped < flood/2 {
		t.Errorf("alice accounted for %d of %d datagrams: her node fell behind the flood (blocked on the link?)", sent+dropped, flood)
	}
	if received.Load() == 0 || uint64(received.Load()) > sent {
		t.Errorf("bob received %d datagrams, alice sent %d", received.Load(), sent)
	}
	out := warren(t, true, "status", "--state", stateA)
	if !strings.Contains(out, fmt.Sprintf("%d queue full", after.DroppedQueueFull)) {
		t.Errorf("status does not show the drops:\n%s", out)
	}
	// The link recovers: a datagram after the flood gets through (sent again every 500 ms: UDP, one
	// may be lost).
	var lastSend time.Time
	testkit.Eventually(t, 30*time.Second, func() bool {
		if time.Since(lastSend) >= 500*time.Millisecond {
			u.sendTo("bob.warren", 7001, "after")
			lastSend = time.Now()
		}
		return afterFlood.Load() > 0
	}, "nothing gets through after the flood")
}

// dialSocksUDP opens a UDP association with the SOCKS5 proxy at proxyAddr, in the calling thread's
// network namespace; like newSocksUDP, but it returns errors (it may run off the test goroutine).
func dialSocksUDP(proxyAddr string) (*socksUDP, error) {
	ctrl, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	ctrl.SetDeadline(time.Now().Add(5 * time.Second))
	ctrl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var r [12]byte
	if _, err := io.ReadFull(ctrl, r[:]); err != nil || r[3] != 0 {
		ctrl.Close()
		return nil, fmt.Errorf("UDP ASSOCIATE: %v %v", r, err)
	}
	ctrl.SetDeadline(time.Time{})
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		ctrl.Close()
		return nil, err
	}
	return &socksUDP{ctrl: ctrl, sock: sock,
		relay: netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[6:10])), uint16(r[10])<<8|uint16(r[11]))}, nil
}

func (s *socksUDP) close() {
	s.ctrl.Close()
	s.sock.Close()
}
