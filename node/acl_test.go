package node

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/testkit"
	"github.com/warren-net/warren/peer"
)

// aclNode is a node "db" (tagged server) exposing tcp:22 and udp:27015, with peers ci1 and ci2
// (tag ci), laptop, and friend (who also shares network "open", which has no rules), all in "lab".
// Peers have an IPv4 and an IPv6 that end alike (100.64.0.4, fd7a:7761:7272::4).
func aclNode(t *testing.T) (n *Node, ci1, ci2, laptop, friend peer.Key) {
	t.Helper()
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "db",
		Expose: []Port{{"tcp", 22}, {"udp", 27015}}, Logger: testkit.Logger(t, "db")})
	if err != nil {
		t.Fatal(err)
	}
	n.sendq.close() // no peer links: a RST the filter sends is counted as failed
	ci1, ci2, laptop, friend = peer.Key{1}, peer.Key{2}, peer.Key{3}, peer.Key{4}
	p := func(k peer.Key, name, tag, ip string, networks ...string) control.Peer {
		ip4 := netip.MustParseAddr(ip)
		ip6 := netip.MustParseAddr(fmt.Sprintf("fd7a:7761:7272::%d", ip4.As4()[3]))
		return control.Peer{Key: k[:], Name: name, Tag: tag, IPs: []netip.Addr{ip4, ip6}, Networks: networks}
	}
	n.handleControl(&control.Msg{Type: control.TypeWelcome, Welcome: &control.Welcome{Tag: "server"}})
	n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{
		Peers: []control.Peer{
			p(ci1, "ci-1", "ci", "100.64.0.2", "lab"), p(ci2, "ci-2", "ci", "100.64.0.3", "lab"),
			p(laptop, "laptop", "", "100.64.0.4", "lab"), p(friend, "friend", "", "100.64.0.5", "lab", "open"),
		},
		ACLs: []control.ACL{{Network: "lab", Rules: []control.ACLRule{
			{From: []string{"tag:ci"}, To: []string{"tag:server"}, Ports: []string{"22/tcp", "27015/udp"}},
			{From: []string{"laptop"}, To: []string{"db"}, Ports: []string{"icmp"}},
			{From: []string{"*"}, To: []string{"someone-else"}, Ports: []string{"*"}},
		}}},
	}})
	return n, ci1, ci2, laptop, friend
}

func TestACLGrants(t *testing.T) {
	n, ci1, ci2, laptop, friend := aclNode(t)
	rt := n.routes.Load()
	for _, c := range []struct {
		name  string
		from  peer.Key
		proto acl.Proto
		port  uint16
		want  bool
	}{
		{"ci ssh (rule to this node's tag)", ci1, acl.TCP, 22, true},
		{"ci game", ci2, acl.UDP, 27015, true},
		{"ci other port", ci1, acl.TCP, 80, false},
		{"ci ping", ci1, acl.ICMP, 0, false},
		{"laptop ping (rule to this node's name)", laptop, acl.ICMP, 0, true},
		{"laptop ssh", laptop, acl.TCP, 22, false},
		{"friend shares a network without rules", friend, acl.TCP, 80, true},
		{"a key that is no peer (removed as its stream came in)", peer.Key{0xee}, acl.TCP, 22, false},
	} {
		if got := rt.allows(c.from, c.proto, c.port); got != c.want {
			t.Errorf("%s: allows=%v, want %v", c.name, got, c.want)
		}
	}
	if rt.grants[ci1] != rt.grants[ci2] {
		t.Error("peers matched by the same rules do not share their grant")
	}
	if _, ok := rt.grants[friend]; ok {
		t.Error("a peer sharing a network without rules is restricted")
	}
}

// TestACLPacketFilter: what the packet path (proxy and TUN mode) lets through.
func TestACLPacketFilter(t *testing.T) {
	n, ci1, _, laptop, _ := aclNode(t)
	ci4, laptop4 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.4")
	for _, c := range []struct {
		name string
		from peer.Key
		pkt  []byte
		want bool
	}{
		{"ci SYN to ssh", ci1, ipPacket(ci4, self4, packet.ProtoTCP, tcpSeg(5000, 22, packet.TCPSYN, "")), true},
		{"ci SYN to 80", ci1, ipPacket(ci4, self4, packet.ProtoTCP, tcpSeg(5000, 80, packet.TCPSYN, "")), false},
		{"ci ACK to 80 (no new connection)", ci1, ipPacket(ci4, self4, packet.ProtoTCP, tcpSeg(5000, 80, packet.TCPACK, "x")), true},
		{"ci SYN-ACK (a reply)", ci1, ipPacket(ci4, self4, packet.ProtoTCP, tcpSeg(80, 5000, packet.TCPSYN|packet.TCPACK, "")), true},
		{"ci UDP to the game", ci1, ipPacket(ci4, self4, packet.ProtoUDP, udpDgram(1, 27015)), true},
		{"ci UDP broadcast to the game", ci1, ipPacket(ci4, bcast4, packet.ProtoUDP, udpDgram(1, 27015)), true},
		{"laptop UDP to the game", laptop, ipPacket(laptop4, self4, packet.ProtoUDP, udpDgram(1, 27015)), false},
		{"laptop UDP broadcast to the game", laptop, ipPacket(laptop4, bcast4, packet.ProtoUDP, udpDgram(1, 27015)), false},
		{"laptop UDP to an unexposed port (a reply)", laptop, ipPacket(laptop4, self4, packet.ProtoUDP, udpDgram(53, 40000)), true},
		{"laptop echo request", laptop, ipPacket(laptop4, self4, packet.ProtoICMP, icmpMsg(8, 1, nil)), true},
		{"ci echo request", ci1, ipPacket(ci4, self4, packet.ProtoICMP, icmpMsg(8, 1, nil)), false},
		{"ci echo reply", ci1, ipPacket(ci4, self4, packet.ProtoICMP, icmpMsg(0, 1, nil)), true},
	} {
		before, rsts := n.drops.acl.Load(), n.sendq.failed.Load()
		got := n.filterACL(n.routes.Load(), c.from, c.pkt)
		if got != c.want {
			t.Errorf("%s: passed=%v, want %v", c.name, got, c.want)
		}
		if counted := n.drops.acl.Load() - before; counted != map[bool]uint64{true: 0, false: 1}[c.want] {
			t.Errorf("%s: %d refusals counted", c.name, counted)
		}
		p, _ := packet.Parse(c.pkt)
		if sent := n.sendq.failed.Load() - rsts; !c.want && p.Proto == packet.ProtoTCP && sent != 1 {
			t.Errorf("%s: refused SYN not answered with a RST", c.name)
		}
	}
	// Clearing the rules restores the default.
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{ACLs: []control.ACL{{Network: "lab"}}}})
	if rt := n.routes.Load(); rt.grants != nil || !n.filterACL(rt, ci1, ipPacket(ci4, self4, packet.ProtoTCP, tcpSeg(5000, 80, packet.TCPSYN, ""))) {
		t.Error("rules still apply after they were cleared")
	}
}

func TestACLFailsClosed(t *testing.T) {
	n, ci1, _, _, _ := aclNode(t)
	// Rules this node cannot read (say a newer server's syntax) allow nothing in that network.
	n.handleControl(&control.Msg{Type: control.TypePeerDelta, PeerDelta: &control.PeerDelta{ACLs: []control.ACL{{Network: "lab",
		Rules: []control.ACLRule{{From: []string{"group:ci"}, To: []string{"*"}, Ports: []string{"*"}}}}}}})
	if n.routes.Load().allows(ci1, acl.TCP, 22) {
		t.Error("unreadable rules let traffic through")
	}
}

// TestACLFilterAllocs: the checks on the packet path (filterACL, and stackAdmit for every datagram
// to an exposed UDP port) do not allocate.
func TestACLFilterAllocs(t *testing.T) {
	n, ci1, _, _, _ := aclNode(t)
	rt := n.routes.Load()
	ci4 := netip.MustParseAddr("100.64.0.2")
	ok := ipPacket(ci4, self4, packet.ProtoUDP, udpDgram(1, 27015))
	refused := ipPacket(ci4, self4, packet.ProtoICMP, icmpMsg(8, 1, nil))
	admit := n.stackAdmit(self4, self6)
	ciUDP, ciSSH := netip.AddrPortFrom(ci4, 4000), netip.AddrPortFrom(ci4, 4001)
	if a := testing.AllocsPerRun(100, func() {
		n.filterACL(rt, ci1, ok)
		n.filterACL(rt, ci1, refused)
		admit("udp", ciUDP, 27015)
		admit("tcp", ciSSH, 80)
	}); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
}

// TestACLStreamPath: on the stream path the rules are checked when a peer opens a stream, before
// the local dial: laptop's stream to an exposed port its rules do not allow is refused (and counted),
// ci's is accepted and relayed.
func TestACLStreamPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	n, err := New(Config{StateDir: t.TempDir(), Coord: "127.0.0.1:1", Name: "db", Expose: []Port{{"tcp", port}}, Logger: testkit.Logger(t, "db")})
	if err != nil {
		t.Fatal(err)
	}
	n.sendq.close()
	ci, laptop := peer.Key{1}, peer.Key{3}
	n.handleControl(&control.Msg{Type: control.TypePeerMap, PeerMap: &control.PeerMap{
		Peers: []control.Peer{
			{Key: ci[:], Name: "ci-1", Tag: "ci", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Networks: []string{"lab"}},
			{Key: laptop[:], Name: "laptop", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}, Networks: []string{"lab"}},
		},
		ACLs: []control.ACL{{Network: "lab", Rules: []control.ACLRule{
			{From: []string{"tag:ci"}, To: []string{"db"}, Ports: []string{fmt.Sprintf("%d/tcp", port)}},
			{From: []string{"laptop"}, To: []string{"db"}, Ports: []string{"icmp"}},
		}}},
	}})
	for _, c := range []struct {
		name string
		from peer.Key
		want byte
	}{{"laptop", laptop, peer.StreamRefused}, {"ci", ci, peer.StreamOK}} {
		acl := n.drops.acl.Load()
		server, client := tcpPair(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			n.acceptStream(peer.NewIncomingStream(c.from, peer.StreamHeader{Proto: peer.ProtoTCP, Port: port}, server))
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(client)
		client.Close()
		<-done
		if err != nil || len(got) == 0 || got[0] != c.want {
			t.Fatalf("%s: stream answered %q, %v", c.name, got, err)
		}
		if c.want == peer.StreamOK && string(got[1:]) != "hi" {
			t.Errorf("%s: relayed %q", c.name, got[1:])
		}
		if counted := n.drops.acl.Load() - acl; counted != map[bool]uint64{true: 1, false: 0}[c.want == peer.StreamRefused] {
			t.Errorf("%s: %d refusals counted", c.name, counted)
		}
	}
	if len(accepted) != 1 {
		t.Errorf("the service saw %d connections, want 1 (ci's)", len(accepted))
	}
}

// tcpPair returns both ends of a loopback TCP connection (the stream path needs CloseWrite).
func tcpPair(t *testing.T) (a, b net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if a, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
