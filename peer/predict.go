package peer

import (
	mrand "math/rand/v2"

	"github.com/warren-net/warren/control"
)

// Port prediction for endpoint-dependent NATs that allocate sequentially (control.Ports): every new
// mapping takes the next port of a counter, Last+Delta, Last+2·Delta, … (carrier-grade and
// corporate NATs often do; the lab's `sequential` router does). NAT discovery measures the pattern
// (classifyPorts); the node reports it with its mapping, and its peers aim the birthday technique
// (birthday.go) at the ports it will allocate next instead of at random ones:
//
//   - Sequential S with an endpoint-independent peer E: S's sockets (sequentialSockets of them) take
//     the next ports of its counter, c+1 … c+8 with c ≥ Last, each pinging E's public address; E
//     sprays Last+Delta, Last+2·Delta, … upwards, so it reaches S's sockets after c−Last probes,
//     whatever c is, as long as fewer than birthdayProbes−sequentialSockets mappings were made behind
//     S since its report. Nothing is left to chance.
//   - Two sequential NATs, S1 (the lower key: it opens sockets) and S2 (it sprays, from a fresh
//     socket, so that each probe opens a new mapping: sprayPaired): S1's sockets,
//     i = 0, 1, …, get ports p1+(a+1+i)·d1 (a = mappings S1 made since its report Last p1), and
//     socket i pings S2's public address at port q+(1+2i)·d2 (pairedTargets). S2's spray probe j goes
//     to p1+(1+j)·d1 (predictPorts) and leaves from q+(b+1+j)·d2 (b likewise). Probe j reaches socket
//     i when j = a+i, and socket i's pings went to that very port when 1+2i = b+1+j, that is when
//     i = a+b and j = 2a+b: one socket and one probe match each other's mappings, both NATs let the
//     pair through, for any drift a+b below the socket count. Again no chance involved.
//   - A sequential NAT and a random one: the random side's ports are unknown and its mappings take
//     whatever the sequential side aims at; two coincidences at once, as between two random NATs.
//     They stay on the relay.
//
// Every attempt moves the counter (sockets, probes), so after each one the node behind the
// sequential NAT measures it again and reports the new Last (Config.OnPortsUsed, node/netcheck.go);
// the peers' next attempt aims from there. The prediction holds while the counter moves only for
// this node; on a NAT shared by many, other hosts' mappings push the counter past the window, and the
// attempt fails (the relay carries on).

// sequentialSockets is how many sockets the side behind a sequential NAT opens for an attempt with
// an easy peer: the spray finds them wherever the counter stands, so a few suffice (one would; more
// only cover a probe lost on the way), and each attempt moves the counter, which every other
// prediction of this NAT must cover, by this much only.
const sequentialSockets = 8

// predictPorts returns up to n ports a NAT with pattern p allocates next, nearest first: Last+Delta,
// Last+2·Delta, …, stopping where they leave 1…65535.
func predictPorts(p control.Ports, n int) []uint16 {
	return stepPorts(int(p.Last)+p.Delta, p.Delta, n)
}

// pairedTargets returns the ports the opening side's sockets ping between two sequential NATs (see
// above): for socket i, Last+(1+2i)·Delta of the peer's pattern p; up to n of them.
func pairedTargets(p control.Ports, n int) []uint16 {
	return stepPorts(int(p.Last)+p.Delta, 2*p.Delta, n)
}

// stepPorts returns up to n ports first, first+step, …, stopping where they leave 1…65535.
func stepPorts(first, step, n int) []uint16 {
	out := make([]uint16, 0, n)
	for port := first; len(out) < n && port >= 1 && port <= 65535; port += step {
		out = append(out, uint16(port))
	}
	return out
}

// randomPorts returns n distinct random ports of 1024…65535 (n at most that many).
func randomPorts(n int) []uint16 {
	n = min(n, 65536-1024)
	seen := make(map[uint16]bool, n)
	out := make([]uint16, 0, n)
	for len(out) < n {
		port := uint16(1024 + mrand.IntN(65536-1024))
		if !seen[port] {
			seen[port] = true
			out = append(out, port)
		}
	}
	return out
}

// Port allocations NAT discovery reports for an endpoint-dependent NAT (NATReport.Allocation).
const (
	AllocSequential = "sequential"
	AllocRandom     = "random"
)

// classifyPorts tells how a NAT allocates ports from the public ports of three mappings it made one
// after the other (to distinct destinations): sequential if both steps have the same sign and are at
// most control.MaxPortDelta, with the smaller step as Delta (another mapping made in between only
// lengthens a step) and the third port as Last; random otherwise. Two random steps that small and
// alike come once in millions of runs. A counter that wraps between the probes reads as random for
// that run. (A port 0, which no NAT hands out, reads as random too.)
func classifyPorts(ports [3]uint16) (string, *control.Ports) {
	d1, d2 := int(ports[1])-int(ports[0]), int(ports[2])-int(ports[1])
	small := func(d int) bool { return d != 0 && d >= -control.MaxPortDelta && d <= control.MaxPortDelta }
	if !small(d1) || !small(d2) || (d1 > 0) != (d2 > 0) || ports[2] == 0 {
		return AllocRandom, nil
	}
	delta := d1
	if abs(d2) < abs(d1) {
		delta = d2
	}
	return AllocSequential, &control.Ports{Delta: delta, Last: ports[2]}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
