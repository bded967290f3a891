package peer

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
)

func TestClassifyPorts(t *testing.T) {
	for _, c := range []struct {
		ports [3]uint16
		alloc string
		want  *control.Ports
	}{
		{[3]uint16{30000, 30001, 30002}, AllocSequential, &control.Ports{Delta: 1, Last: 30002}},
		{[3]uint16{30000, 30002, 30003}, AllocSequential, &control.Ports{Delta: 1, Last: 30003}}, // a mapping in between
		{[3]uint16{30000, 30001, 30005}, AllocSequential, &control.Ports{Delta: 1, Last: 30005}},
		{[3]uint16{1000, 1002, 1004}, AllocSequential, &control.Ports{Delta: 2, Last: 1004}},
		{[3]uint16{5000, 4999, 4998}, AllocSequential, &control.Ports{Delta: -1, Last: 4998}}, // counting down
		{[3]uint16{100, 116, 132}, AllocSequential, &control.Ports{Delta: 16, Last: 132}},
		{[3]uint16{100, 117, 134}, AllocRandom, nil},       // steps beyond MaxPortDelta
		{[3]uint16{30000, 30001, 30000}, AllocRandom, nil}, // back and forth
		{[3]uint16{30000, 30000, 30000}, AllocRandom, nil}, // one port for all: not endpoint-dependent
		{[3]uint16{30999, 30000, 30001}, AllocRandom, nil}, // the counter wrapped: random this time
		{[3]uint16{41234, 9876, 61000}, AllocRandom, nil},
		{[3]uint16{65534, 65535, 1}, AllocRandom, nil},
		{[3]uint16{2, 1, 0}, AllocRandom, nil}, // port 0 is no mapping
	} {
		alloc, got := classifyPorts(c.ports)
		if alloc != c.alloc || (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("classifyPorts(%v) = %s %+v, want %s %+v", c.ports, alloc, got, c.alloc, c.want)
		}
		if !got.Valid() {
			t.Errorf("classifyPorts(%v): invalid pattern %+v", c.ports, *got)
		}
	}
}

func TestPredictPorts(t *testing.T) {
	for _, c := range []struct {
		p           control.Ports
		n           int
		want, pairs []uint16
	}{
		{control.Ports{Delta: 1, Last: 30000}, 4, []uint16{30001, 30002, 30003, 30004}, []uint16{30001, 30003, 30005, 30007}},
		{control.Ports{Delta: 2, Last: 100}, 3, []uint16{102, 104, 106}, []uint16{102, 106, 110}},
		{control.Ports{Delta: -1, Last: 3}, 5, []uint16{2, 1}, []uint16{2}},                // stops at port 1
		{control.Ports{Delta: 1, Last: 65533}, 5, []uint16{65534, 65535}, []uint16{65534}}, // and at 65535
		{control.Ports{Delta: 1, Last: 65535}, 5, []uint16{}, []uint16{}},
		{control.Ports{Delta: 3, Last: 10}, 0, []uint16{}, []uint16{}},
	} {
		if got := predictPorts(c.p, c.n); !slices.Equal(got, c.want) {
			t.Errorf("predictPorts(%+v, %d) = %v, want %v", c.p, c.n, got, c.want)
		}
		if got := pairedTargets(c.p, c.n); !slices.Equal(got, c.pairs) {
			t.Errorf("pairedTargets(%+v, %d) = %v, want %v", c.p, c.n, got, c.pairs)
		}
	}
}

// TestPairedPrediction checks the arithmetic of two sequential NATs meeting (predict.go) by
// simulating both counters: whatever the drifts a and b since the two reports (below the socket
// count), exactly the opener's socket a+b and the sprayer's probe 2a+b hold matching mappings.
func TestPairedPrediction(t *testing.T) {
	for _, d := range []struct{ d1, d2 int }{{1, 1}, {1, 2}, {-1, 1}, {3, -2}} {
		p1 := control.Ports{Delta: d.d1, Last: 30000}
		p2 := control.Ports{Delta: d.d2, Last: 40000}
		for _, drift := range [][2]int{{0, 0}, {5, 0}, {0, 7}, {60, 90}, {birthdaySockets - 1, 0}, {100, birthdaySockets - 101}} {
			a, b := drift[0], drift[1]
			targets := hardTargets(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 40000), &p1, &p2)
			spray := predictPorts(p1, birthdayProbes)
			matches := 0
			for i, target := range targets {
				src1 := int(p1.Last) + (a+1+i)*p1.Delta // socket i's public port
				for j, dst := range spray {
					src2 := int(p2.Last) + (b+1+j)*p2.Delta // probe j's public port
					if int(dst) == src1 && int(target.Port()) == src2 {
						matches++
						if i != a+b || j != 2*a+b {
							t.Errorf("deltas %v drift %v: socket %d matches probe %d, want %d and %d", d, drift, i, j, a+b, 2*a+b)
						}
					}
				}
			}
			if matches != 1 {
				t.Errorf("deltas %v drift %v: %d matching pairs, want 1", d, drift, matches)
			}
		}
	}
}

func TestHardTargets(t *testing.T) {
	pub := netip.MustParseAddrPort("192.0.2.1:7000")
	for _, c := range []struct {
		self, peer *control.Ports
		n          int
		first      netip.AddrPort
	}{
		{nil, nil, birthdaySockets, pub},
		{&control.Ports{Delta: 1, Last: 9}, nil, sequentialSockets, pub},
		{&control.Ports{Delta: 1, Last: 9}, &control.Ports{Delta: 1, Last: 20000}, birthdaySockets, netip.MustParseAddrPort("192.0.2.1:20001")},
	} {
		got := hardTargets(pub, c.self, c.peer)
		if len(got) != c.n || got[0] != c.first {
			t.Errorf("hardTargets(%v, %v, %v): %d targets from %v, want %d from %v", pub, c.self, c.peer, len(got), got[0], c.n, c.first)
		}
	}
}

func TestRandomPorts(t *testing.T) {
	ports := randomPorts(birthdayProbes)
	seen := map[uint16]bool{}
	for _, p := range ports {
		if p < 1024 || seen[p] {
			t.Fatalf("port %d: below 1024 or twice", p)
		}
		seen[p] = true
	}
	if len(ports) != birthdayProbes {
		t.Fatalf("%d ports, want %d", len(ports), birthdayProbes)
	}
}

// fakeNATCoord stands for a coord's main and probe ports seen through a NAT: it answers binding
// requests with the public port that NAT would have given the sender's socket towards that port,
// allocating as next says for every new (socket, destination) pair.
func fakeNATCoord(t *testing.T, next func(n int) uint16) (coord netip.AddrPort, probePort uint16) {
	t.Helper()
	var (
		mu       sync.Mutex
		mappings = map[[2]netip.AddrPort]uint16{}
	)
	var ports [2]*net.UDPConn
	for i := range ports {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ports[i] = c
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				tx, err := control.ParseBindingRequest(buf[:n])
				if err != nil {
					continue
				}
				k := [2]netip.AddrPort{from, udpAddrOf(c)}
				mu.Lock()
				port, ok := mappings[k]
				if !ok {
					port = next(len(mappings))
					mappings[k] = port
				}
				mu.Unlock()
				c.WriteToUDPAddrPort(control.AppendBindingResponse(nil, tx, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)), from)
			}
		}()
	}
	return udpAddrOf(ports[0]), udpAddrOf(ports[1]).Port()
}

func udpAddrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestPortPattern runs NAT discovery's port probes against a fake coord behind a sequential NAT
// and behind a random one: three fresh mappings, read as sequential from the right last port, or as
// random (twice: a random reading is measured again).
func TestPortPattern(t *testing.T) {
	n := newUDPTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	coord, probe := fakeNATCoord(t, func(i int) uint16 { return 30000 + 2*uint16(i) })
	alloc, ports := n.ep.PortPattern(ctx, coord, probe)
	if alloc != AllocSequential || ports == nil || *ports != (control.Ports{Delta: 2, Last: 30004}) {
		t.Errorf("behind a NAT counting in twos: %s %+v, want sequential, delta 2, last 30004", alloc, ports)
	}

	random := []uint16{41234, 9876, 61000}
	coord, probe = fakeNATCoord(t, func(i int) uint16 { return random[i%len(random)] })
	if alloc, ports := n.ep.PortPattern(ctx, coord, probe); alloc != AllocRandom || ports != nil {
		t.Errorf("behind a random NAT: %s %+v, want random and no pattern", alloc, ports)
	}

	// A sequential NAT whose counter jumped during the first reading (the node's other mappings):
	// the second reading counts.
	jumpy := []uint16{30000, 30001, 30040, 30041, 30042, 30043}
	coord, probe = fakeNATCoord(t, func(i int) uint16 { return jumpy[i] })
	if alloc, ports := n.ep.PortPattern(ctx, coord, probe); alloc != AllocSequential || ports == nil || ports.Last != 30043 {
		t.Errorf("behind a sequential NAT that jumped once: %s %+v, want sequential, last 30043", alloc, ports)
	}

	// A coord that does not answer: not measured.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer scancel()
	if alloc, ports := n.ep.PortPattern(sctx, udpAddrOf(silent), 9); alloc != "" || ports != nil {
		t.Errorf("without answers: %q %+v, want nothing", alloc, ports)
	}
}
