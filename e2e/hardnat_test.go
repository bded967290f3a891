package e2e

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHardNATTechniques measures, with plain UDP sockets in the NAT lab, what the known techniques for
// punching through an endpoint-dependent ("symmetric") NAT achieve between a port-restricted site (E,
// the easy side: its public port is known and stable) and a symmetric one (H, the hard side: a new
// random public port for every destination). No warren code runs here: this is the experiment that
// chose the technique warren uses for such pairs (the birthday technique, peer/birthday.go; the NAT
// matrix shows it working end to end).
//
// In every trial H first sends to E's public address (opening a mapping E cannot see, and which E's
// router drops), then E sprays probes at ports of H's public address. A trial succeeds when a probe
// reaches H: H's answer then passes E's router, which has seen E send to that port. Techniques:
//
//   - spray: H uses one socket (warren's one-socket design); E probes random ports.
//   - predict: H's last two mappings (toward the coord's two addresses) are observed first; E probes
//     the ports nearest the last one (port prediction, which works on NATs that allocate sequentially).
//   - birthday: H opens many sockets, each sending to E (many mappings); E probes random ports.
//
// The test asserts what the arithmetic says for a NAT that picks ports uniformly from 1024–65535:
// one socket almost never succeeds within a thousand probes, prediction does no better, and the
// birthday technique almost always does; and it prints success rates by probe budget.
func TestHardNATTechniques(t *testing.T) {
	lab := newNetlab(t, "e:port", "h:symmetric")
	easy, hard := lab.site(t, "e"), lab.site(t, "h")
	observer := labUDP(t, lab.coord.NS, netip.AddrPortFrom(lab.coord.Addrs[0], 5000).String())
	observer2 := labUDP(t, lab.coord.NS, netip.AddrPortFrom(lab.coord.Addrs[1], 5000).String())

	const (
		trials  = 8
		budget  = 1024                   // probes E sends per trial
		pace    = 300 * time.Microsecond // between probes: ~3300 probes/s, about a megabit per second
		sockets = 256                    // H's sockets in the birthday technique
		lo, hi  = 1024, 65535            // the ports the lab's symmetric NAT picks from
	)
	budgets := []int{64, 256, 1024}

	// mapped returns the public address the observer saw c send from.
	mapped := func(c *net.UDPConn, obs *net.UDPConn, tag string) netip.AddrPort {
		t.Helper()
		sendUDP(t, c, udpAddr(obs), tag)
		from, ok := recvOne(obs, tag, 2*time.Second)
		if !ok {
			t.Fatalf("observer saw nothing from %s", tag)
		}
		return from
	}

	// trial runs one attempt: H opens n sockets that each send to E's public address, E probes the
	// ports order gives (a func of what was observed of H) and the index of the first probe that
	// reached any H socket is returned, or -1.
	trial := func(name string, i, n int, order func(last uint16) []uint16) int {
		e := labUDP(t, easy.Clients[0].NS, "0.0.0.0:0")
		defer e.Close()
		ePub := mapped(e, observer, fmt.Sprintf("%s-%d-e", name, i))
		hs := make([]*net.UDPConn, n)
		for k := range hs {
			hs[k] = labUDP(t, hard.Clients[0].NS, "0.0.0.0:0")
			defer hs[k].Close()
		}
		// H's last observed mapping, toward the second coord address (used by prediction only).
		mapped(hs[0], observer, fmt.Sprintf("%s-%d-h1", name, i))
		last := mapped(hs[0], observer2, fmt.Sprintf("%s-%d-h2", name, i)).Port()
		for _, h := range hs {
			sendUDP(t, h, ePub, "open")
		}
		time.Sleep(50 * time.Millisecond) // let the mappings settle before the spray
		hPub := hard.Public
		for j, port := range order(last) {
			sendUDP(t, e, netip.AddrPortFrom(hPub, port), "p"+strconv.Itoa(j))
			time.Sleep(pace)
		}
		time.Sleep(100 * time.Millisecond)
		first := -1
		buf := make([]byte, 64)
		for _, h := range hs {
			for {
				h.SetReadDeadline(time.Now().Add(time.Millisecond))
				nr, _, err := h.ReadFromUDPAddrPort(buf)
				if err != nil {
					break
				}
				if j, err := strconv.Atoi(strings.TrimPrefix(string(buf[:nr]), "p")); err == nil && (first < 0 || j < first) {
					first = j
				}
			}
		}
		return first
	}

	random := func(uint16) []uint16 {
		seen := map[uint16]bool{}
		var ports []uint16
		for len(ports) < budget {
			p := uint16(lo + rand.IntN(hi-lo+1))
			if !seen[p] {
				seen[p] = true
				ports = append(ports, p)
			}
		}
		return ports
	}
	nearest := func(last uint16) []uint16 {
		var ports []uint16
		for d := 1; len(ports) < budget; d++ {
			for _, p := range []int{int(last) + d, int(last) - d} {
				if p >= lo && p <= hi && len(ports) < budget {
					ports = append(ports, uint16(p))
				}
			}
		}
		return ports
	}

	type technique struct {
		name    string
		sockets int
		order   func(uint16) []uint16
	}
	techniques := []technique{
		{"spray", 1, random},
		{"predict", 1, nearest},
		{"birthday", sockets, random},
	}
	success := map[string][]int{} // technique → successes per budget
	var table []string
	for _, tc := range techniques {
		wins := make([]int, len(budgets))
		start := time.Now()
		for i := range trials {
			first := trial(tc.name, i, tc.sockets, tc.order)
			for b, n := range budgets {
				if first >= 0 && first < n {
					wins[b]++
				}
			}
		}
		success[tc.name] = wins
		row := fmt.Sprintf("%-8s %4d sockets |", tc.name, tc.sockets)
		for b, n := range budgets {
			expect := 1 - math.Exp(-float64(tc.sockets)*float64(n)/float64(hi-lo+1))
			row += fmt.Sprintf(" %4d probes: %d/%d (%3.0f%% expected)", n, wins[b], trials, 100*expect)
		}
		table = append(table, row+fmt.Sprintf(" | %v per trial", (time.Since(start)/trials).Round(10*time.Millisecond)))
	}
	t.Logf("port-restricted ↔ symmetric (random port per destination), %d trials each:\n%s", trials, strings.Join(table, "\n"))

	all := len(budgets) - 1
	if w := success["spray"][all]; w > trials/4 {
		t.Errorf("one socket and %d random probes succeeded %d of %d times: the lab's symmetric NAT is not random per destination", budget, w, trials)
	}
	if w := success["predict"][all]; w > trials/4 {
		t.Errorf("port prediction succeeded %d of %d times: the lab's symmetric NAT allocates predictably", w, trials)
	}
	if w := success["birthday"][all]; w < trials*3/4 {
		t.Errorf("birthday technique (%d sockets, %d probes) succeeded only %d of %d times; expected about 98%%", sockets, budget, w, trials)
	}
}
