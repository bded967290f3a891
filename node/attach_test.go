//go:build linux

package node

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/netstack"
	"github.com/warren-net/warren/peer"
	"github.com/warren-net/warren/tun"
)

// fakeDevice is an attached device backed by a datagram socket pair: what the node writes to the
// device can be read from far.
func fakeDevice(t *testing.T) (*tun.Device, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[1], true)
	dev, err := tun.FromFile(os.NewFile(uintptr(fds[0]), "fake"), tun.Config{Addrs: []netip.Prefix{netip.PrefixFrom(self4, 10)}, Receive: func([]byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dev.Close()
		unix.Close(fds[1])
	})
	return dev, fds[1]
}

// got returns the packet waiting at a fake device's far end, or nil.
func got(t *testing.T, far int) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	n, err := unix.Read(far, buf)
	if errors.Is(err, unix.EAGAIN) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestReceiveAttached: in proxy mode, a peer's packet goes to the attached device whose flow it
// answers, and only there; unsolicited and spoofed packets reach no device.
func TestReceiveAttached(t *testing.T) {
	n, b := testBridge()
	n.log = hclog.NewNullLogger()
	n.limits = newRateLimiter(broadcastRate, broadcastBurst)
	bob, eve := peer.Key{1}, peer.Key{2}
	n.routes.Store(&routeTable{owner: map[netip.Addr]peer.Key{peer4: bob, peer6: bob, netip.MustParseAddr("100.64.0.3"): eve}})
	devA, farA := fakeDevice(t)
	devB, farB := fakeDevice(t)
	b.devs[ownerAttached].Store(devA)
	b.devs[ownerAttached+1].Store(devB)
	n.tun.Store(b)

	b.send(n, ipPacket(self4, peer4, packet.ProtoTCP, tcpSeg(40000, 80, packet.TCPSYN, "")), ownerAttached)
	b.send(n, ipPacket(self6, peer6, packet.ProtoUDP, udpDgram(40001, 53)), ownerAttached+1)

	toA := ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(80, 40000, packet.TCPSYN|packet.TCPACK, ""))
	toB := ipPacket(peer6, self6, packet.ProtoUDP, udpDgram(53, 40001))
	n.receiveAttached(bob, toA)
	n.receiveAttached(bob, toB)
	if p := got(t, farA); !bytes.Equal(p, toA) {
		t.Errorf("device A got %x, want the SYN-ACK", p)
	}
	if p := got(t, farB); !bytes.Equal(p, toB) {
		t.Errorf("device B got %x, want the UDP reply", p)
	}

	for _, c := range []struct {
		name string
		from peer.Key
		pkt  []byte
	}{
		{"SYN to an exposed port (the netstack's)", bob, ipPacket(peer4, self4, packet.ProtoTCP, tcpSeg(50000, 22, packet.TCPSYN, ""))},
		{"echo request (the netstack answers)", bob, ipPacket(peer4, self4, packet.ProtoICMP, icmpMsg(8, 5, nil))},
		{"A's flow from another peer's address", eve, ipPacket(netip.MustParseAddr("100.64.0.3"), self4, packet.ProtoTCP, tcpSeg(80, 40000, packet.TCPACK, ""))},
		{"A's flow, spoofed by another peer", eve, toA},
	} {
		n.receiveAttached(c.from, c.pkt)
		if p := got(t, farA); p != nil {
			t.Errorf("%s: device A got it", c.name)
		}
		if p := got(t, farB); p != nil {
			t.Errorf("%s: device B got it", c.name)
		}
	}
	if s := n.drops.spoofed.Load(); s != 1 {
		t.Errorf("spoofed drops %d, want 1", s)
	}
}

// TestEgressOutput: an attached device's packets to destinations outside the overlay go to its
// egress stack (TCP and UDP only: a ping would be answered by the stack itself), which dials them;
// with --overlay-only a TCP segment is answered with a RST and the rest dropped, the stack untouched.
func TestEgressOutput(t *testing.T) {
	n, b := testBridge()
	n.log = hclog.NewNullLogger()
	dev, far := fakeDevice(t)
	b.devs[ownerAttached].Store(dev)
	dst := netip.MustParseAddr("192.0.2.1")
	syn := ipv4Checked(self4, dst, packet.ProtoTCP, checkedSeg(self4, dst, 80, packet.TCPSYN))

	isRST := func(p []byte) bool {
		q, ok := packet.Parse(p)
		return ok && q.Src == dst && q.Dst == self4 && q.Proto == packet.ProtoTCP && q.TCPFlags&packet.TCPRST != 0 && q.DPort == 40000
	}
	dialed := make(chan string, 4)
	eg, err := netstack.New(netstack.Config{MTU: 1280, Output: func(p []byte) { dev.Write(p) },
		DialEgress: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- network + " " + addr
			return nil, errors.New("refused by the test")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer eg.Close()
	b.stacks[ownerAttached].Store(eg) // the device's stack, there for TCP to peers whatever the mode

	n.cfg.OverlayOnly = true
	n.outputTUN(b, ownerAttached, syn)
	if p := got(t, far); !isRST(p) {
		t.Errorf("--overlay-only: SYN outward answered with %x, want a RST", p)
	}
	n.outputTUN(b, ownerAttached, ipPacket(self4, dst, packet.ProtoUDP, udpDgram(40001, 53)))
	if p := got(t, far); p != nil {
		t.Errorf("--overlay-only: a datagram outward got %x", p)
	}
	if in := eg.Stats().PacketsIn; in != 0 {
		t.Errorf("--overlay-only: %d packets outward reached the device's stack", in)
	}
	n.cfg.OverlayOnly = false

	n.outputTUN(b, ownerAttached, ipPacket(self4, dst, packet.ProtoICMP, icmpMsg(8, 5, nil)))
	if in := eg.Stats().PacketsIn; in != 0 {
		t.Errorf("a ping outward reached the egress stack")
	}
	n.outputTUN(b, ownerAttached, syn)
	select {
	case d := <-dialed:
		if d != "tcp 192.0.2.1:80" {
			t.Errorf("egress dialed %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the egress stack never dialed")
	}
	var p []byte
	testkit.Eventually(t, 10*time.Second, func() bool { p = got(t, far); return p != nil }, "no answer to the refused SYN")
	if !isRST(p) {
		t.Errorf("refused egress dial answered with %x, want a RST", p)
	}
}
