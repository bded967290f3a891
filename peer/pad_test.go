package peer

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// ipv4Packet returns an IPv4 packet of n bytes (header + a payload of fill bytes) whose header gives
// its length.
func ipv4Packet(n int, fill byte) []byte {
	pkt := bytes.Repeat([]byte{fill}, n)
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:4], uint16(n))
	return pkt
}

func ipv6Packet(n int, fill byte) []byte {
	pkt := bytes.Repeat([]byte{fill}, n)
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:6], uint16(n-40))
	return pkt
}

func TestUnpad(t *testing.T) {
	v4, v6 := ipv4Packet(1200, 7), ipv6Packet(1200, 7)
	for _, tc := range []struct {
		name     string
		pkt, out []byte
	}{
		{"IPv4 padded", append(bytes.Clone(v4), make([]byte, 100)...), v4},
		{"IPv6 padded", append(bytes.Clone(v6), make([]byte, 100)...), v6},
		{"IPv4 unpadded", v4, v4},
		{"IPv4 longer than the datagram", v4[:1000], v4[:1000]},
		{"not IP", bytes.Repeat([]byte{0x15}, 1300), bytes.Repeat([]byte{0x15}, 1300)},
		{"short IPv4", []byte{0x45, 0, 0, 4, 9, 9}, []byte{0x45, 0, 0, 4, 9, 9}},
		{"empty", nil, nil},
	} {
		if got := unpad(tc.pkt); !bytes.Equal(got, tc.out) {
			t.Errorf("%s: unpad gave %d bytes, want %d", tc.name, len(got), len(tc.out))
		}
	}
}

// FuzzUnpad: unpad returns a prefix, never more, and undoes padding of any packet Send pads.
func FuzzUnpad(f *testing.F) {
	f.Add(ipv4Packet(60, 1), 20)
	f.Add(ipv6Packet(80, 2), 0)
	f.Add([]byte{0x45, 0xff}, 3)
	f.Fuzz(func(t *testing.T, pkt []byte, pad int) {
		got := unpad(pkt)
		if !bytes.Equal(got, pkt[:len(got)]) {
			t.Fatal("unpad returned no prefix of its input")
		}
		if n := ipLen(pkt); n == 0 || n != len(pkt) || pad < 0 || pad > 1500 {
			return
		}
		if padded := append(bytes.Clone(pkt), make([]byte, pad)...); !bytes.Equal(unpad(padded), pkt) {
			t.Fatalf("unpad(%d bytes + %d of padding) gave %d bytes", len(pkt), pad, len(unpad(padded)))
		}
	})
}

// sizeRecorder records the sizes of the UDP payloads written through it once recording is on.
type sizeRecorder struct {
	net.PacketConn
	mu     sync.Mutex
	on     bool
	counts map[int]int
}

func (r *sizeRecorder) WriteTo(p []byte, addr net.Addr) (int, error) {
	r.mu.Lock()
	if r.on {
		r.counts[len(p)]++
	}
	r.mu.Unlock()
	return r.PacketConn.WriteTo(p, addr)
}

func (r *sizeRecorder) start() {
	r.mu.Lock()
	r.on, r.counts = true, make(map[int]int)
	r.mu.Unlock()
}

func (r *sizeRecorder) count(size int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[size]
}

// TestLargePacketsFillQUICPackets: a large overlay packet leaves in a QUIC packet of exactly the
// link's packet size (which is what lets quic-go batch them with GSO), and arrives as it was sent,
// padding removed; a small one is not padded. The link here has no path MTU discovery (memnet), so
// its packets stay at InitialPacketSize. Fails if quic-go's framing changes under pad.go's sums.
func TestLargePacketsFillQUICPackets(t *testing.T) {
	defer testkit.VerifyNone(t)()
	pc, err := testNet(t).Listen(netip.MustParseAddrPort("10.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &sizeRecorder{PacketConn: pc}
	a, b := newTestNodeOn(t, newTestKey(t), rec), newTestNode(t)
	a.ep.SetPeers([]Info{b.info()})
	b.ep.SetPeers([]Info{a.info()})
	sendUntil(t, a, b, []byte("link up"))

	rec.start()
	const n = 20
	for i := range n {
		for _, pkt := range [][]byte{ipv4Packet(MaxPacketSize, byte(i)), ipv6Packet(MaxPacketSize-100, byte(i)), ipv4Packet(200, byte(i))} {
			if err := a.ep.Send(b.key, pkt); err != nil {
				t.Fatalf("send: %v", err)
			}
			select {
			case got := <-b.got:
				if !bytes.Equal(got, pkt) {
					t.Fatalf("packet %d: got %d bytes, want the %d sent", i, len(got), len(pkt))
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("packet %d of %d bytes never arrived", i, len(pkt))
			}
		}
	}
	if full := rec.count(InitialPacketSize); full < 2*n {
		t.Errorf("%d packets of %d bytes (the link's size) for %d large overlay packets; sizes: %v", full, InitialPacketSize, 2*n, rec.counts)
	}
	a.ep.Close()
	b.ep.Close()
}
