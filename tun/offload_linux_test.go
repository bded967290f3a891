package tun

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/internal/packet"
	"github.com/warren-net/warren/internal/packet/packettest"
)

// frame puts a virtio_net_hdr before pkt.
func frame(h vnetHdr, pkt []byte) []byte {
	b := make([]byte, vnetHdrLen, vnetHdrLen+len(pkt))
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
	return append(b, pkt...)
}

// transportValid reports whether IP packet pkt's transport checksum (and an IPv4 header's) is right.
func transportValid(t *testing.T, pkt []byte) bool {
	t.Helper()
	p, ok := packet.Parse(pkt)
	if !ok {
		t.Fatalf("packet does not parse: %x", pkt)
	}
	n := len(p.Transport)
	var pseudo []byte
	if p.Src.Is4() {
		if packet.Checksum(0, pkt[:20]) != 0xffff {
			return false
		}
		s, d := p.Src.As4(), p.Dst.As4()
		pseudo = append(append(s[:], d[:]...), 0, p.Proto, byte(n>>8), byte(n))
	} else {
		s, d := p.Src.As16(), p.Dst.As16()
		pseudo = append(append(s[:], d[:]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, p.Proto)
	}
	return packet.Checksum(packet.Checksum(0, pseudo), p.Transport) == 0xffff
}

// partial leaves IP packet pkt's transport checksum as the kernel does with checksum offload: the
// pseudo-header's sum (not complemented) in the field; it returns csum_start and csum_offset.
func partial(pkt []byte, csumOffset int) (uint16, uint16) {
	p, _ := packet.Parse(pkt)
	start := len(pkt) - len(p.Transport)
	n := len(p.Transport)
	var pseudo []byte
	if p.Src.Is4() {
		s, d := p.Src.As4(), p.Dst.As4()
		pseudo = append(append(s[:], d[:]...), 0, p.Proto, byte(n>>8), byte(n))
	} else {
		s, d := p.Src.As16(), p.Dst.As16()
		pseudo = append(append(s[:], d[:]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, p.Proto)
	}
	binary.BigEndian.PutUint16(pkt[start+csumOffset:], packet.Checksum(0, pseudo))
	return uint16(start), uint16(csumOffset)
}

var (
	src4, dst4 = netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	src6, dst6 = netip.MustParseAddr("fd7a::1"), netip.MustParseAddr("fd7a::2")
)

// recorder is a Device whose Receive and ReceiveLarge keep copies of what they got.
func recorder(takeLarge bool) (*Device, *[][]byte, *[][]byte) {
	var small, large [][]byte
	d := &Device{cfg: Config{
		Receive: func(p []byte) { small = append(small, bytes.Clone(p)) },
		ReceiveLarge: func(p []byte) bool {
			large = append(large, bytes.Clone(p))
			return takeLarge
		},
	}}
	return d, &small, &large
}

// TestChecksumCompleted: a packet the kernel left with a partial checksum (TCP or UDP) reaches
// Receive with the checksum done; one without the flag passes untouched.
func TestChecksumCompleted(t *testing.T) {
	d, small, _ := recorder(false)
	for _, pkt := range [][]byte{
		packettest.IP(src4, dst4, packet.ProtoTCP, packettest.TCP(1, 2, packet.TCPACK, "hello, world")),
		packettest.IP(src6, dst6, packet.ProtoTCP, packettest.TCP(1, 2, packet.TCPACK, "odd")),
		packettest.IP(src4, dst4, packet.ProtoUDP, append(packettest.UDP(1, 2), "datagram"...)),
	} {
		off := 16
		if pkt[0]>>4 == 4 && pkt[9] == packet.ProtoUDP {
			binary.BigEndian.PutUint16(pkt[24:], uint16(len(pkt)-20)) // UDP length
			off = 6
		}
		if pkt[0]>>4 == 4 {
			binary.BigEndian.PutUint16(pkt[10:], ^packet.Checksum(0, pkt[:20]))
		}
		start, o := partial(pkt, off)
		d.handleFrame(frame(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: start, csumOffset: o}, pkt))
	}
	if len(*small) != 3 {
		t.Fatalf("Receive got %d packets, want 3", len(*small))
	}
	for i, p := range *small {
		if !transportValid(t, p) {
			t.Errorf("packet %d: checksum not completed", i)
		}
	}
	if d.handleFrame(frame(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 200}, (*small)[0])); d.Dropped.Load() != 1 {
		t.Error("a checksum start past the packet was not dropped")
	}
}

// large builds a TSO segment of payload n bytes as the kernel hands it over: IP length as the kernel
// sets it (here: wrong on purpose, 0), checksum partial, flags PSH|ACK|FIN|CWR.
func large(src, dst netip.Addr, n int) ([]byte, []byte) {
	payload := strings.Repeat("abcdefghij", n/10+1)[:n]
	pkt := packettest.IP(src, dst, packet.ProtoTCP, packettest.TCP(1, 2, packet.TCPACK|packet.TCPFIN|0x08|0x80, payload))
	if src.Is4() {
		binary.BigEndian.PutUint16(pkt[2:], 0)
		binary.BigEndian.PutUint16(pkt[4:], 7) // IP ID
	} else {
		binary.BigEndian.PutUint16(pkt[4:], 0)
	}
	return pkt, []byte(payload)
}

// TestLargeSegmentTaken: a TSO segment goes to ReceiveLarge whole, its IP length set.
func TestLargeSegmentTaken(t *testing.T) {
	d, small, big := recorder(true)
	pkt, _ := large(src4, dst4, 5000)
	start, off := partial(pkt, 16)
	d.handleFrame(frame(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4,
		hdrLen: 40, gsoSize: 1228, csumStart: start, csumOffset: off}, pkt))
	if len(*small) != 0 || len(*big) != 1 || d.Large.Load() != 1 {
		t.Fatalf("Receive got %d, ReceiveLarge %d (taken %d); want 0, 1, 1", len(*small), len(*big), d.Large.Load())
	}
	got := (*big)[0]
	if binary.BigEndian.Uint16(got[2:]) != uint16(len(got)) || packet.Checksum(0, got[:20]) != 0xffff {
		t.Errorf("IPv4 length %d (want %d) or header checksum wrong", binary.BigEndian.Uint16(got[2:]), len(got))
	}
}

// TestLargeSegmentSplit: a TSO segment that ReceiveLarge leaves is cut into MSS-sized segments, in
// order, with consecutive sequence numbers and IP IDs, FIN and PSH only on the last, CWR only on
// the first, and every length and checksum right; the payload is the original's.
func TestLargeSegmentSplit(t *testing.T) {
	for _, tc := range []struct {
		src, dst netip.Addr
		gso      uint8
	}{{src4, dst4, unix.VIRTIO_NET_HDR_GSO_TCPV4}, {src6, dst6, unix.VIRTIO_NET_HDR_GSO_TCPV6}} {
		d, small, _ := recorder(false)
		pkt, payload := large(tc.src, tc.dst, 3000)
		start, off := partial(pkt, 16)
		d.handleFrame(frame(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: tc.gso | gsoECN,
			gsoSize: 1228, csumStart: start, csumOffset: off}, pkt))
		if len(*small) != 3 {
			t.Fatalf("%v: %d segments, want 3 (1228+1228+544)", tc.src, len(*small))
		}
		var joined []byte
		for i, seg := range *small {
			if !transportValid(t, seg) {
				t.Errorf("%v: segment %d: checksum wrong", tc.src, i)
			}
			p, _ := packet.Parse(seg)
			tcp := p.Transport
			data := tcp[20:]
			joined = append(joined, data...)
			if want := 1000 + uint32(1228*i); binary.BigEndian.Uint32(tcp[4:]) != want {
				t.Errorf("%v: segment %d: seq %d, want %d", tc.src, i, binary.BigEndian.Uint32(tcp[4:]), want)
			}
			last := i == 2
			if fin := tcp[13]&packet.TCPFIN != 0; fin != last {
				t.Errorf("%v: segment %d: FIN %v", tc.src, i, fin)
			}
			if psh := tcp[13]&0x08 != 0; psh != last {
				t.Errorf("%v: segment %d: PSH %v", tc.src, i, psh)
			}
			if cwr := tcp[13]&0x80 != 0; cwr != (i == 0) {
				t.Errorf("%v: segment %d: CWR %v", tc.src, i, cwr)
			}
			if tc.src.Is4() {
				if binary.BigEndian.Uint16(seg[2:]) != uint16(len(seg)) || binary.BigEndian.Uint16(seg[4:]) != uint16(7+i) {
					t.Errorf("segment %d: IPv4 length %d (want %d), ID %d", i, binary.BigEndian.Uint16(seg[2:]), len(seg), binary.BigEndian.Uint16(seg[4:]))
				}
			} else if binary.BigEndian.Uint16(seg[4:]) != uint16(len(seg)-40) {
				t.Errorf("segment %d: IPv6 payload length %d (want %d)", i, binary.BigEndian.Uint16(seg[4:]), len(seg)-40)
			}
		}
		if !bytes.Equal(joined, payload) {
			t.Errorf("%v: the segments' payload differs from the original's", tc.src)
		}
	}
}

// TestBadFramesDropped: frames the device cannot make sense of are counted and dropped.
func TestBadFramesDropped(t *testing.T) {
	d, small, big := recorder(true)
	udp := packettest.IP(src4, dst4, packet.ProtoUDP, packettest.UDP(1, 2))
	for _, f := range [][]byte{
		{1, 2, 3}, // shorter than the header
		frame(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_UDP, gsoSize: 100}, udp),                                                          // never turned on
		frame(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 100}, udp),                                                        // not TCP
		frame(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4}, packettest.IP(src4, dst4, packet.ProtoTCP, packettest.TCP(1, 2, 0, "x"))), // gso_size 0
	} {
		d.handleFrame(f)
	}
	if d.Dropped.Load() != 4 || len(*small)+len(*big) != 0 {
		t.Fatalf("dropped %d (want 4), passed on %d", d.Dropped.Load(), len(*small)+len(*big))
	}
}

// FuzzHandleFrame: no frame makes the reader panic, and what it passes on fits what it read.
func FuzzHandleFrame(f *testing.F) {
	pkt, _ := large(src4, dst4, 3000)
	f.Add(frame(vnetHdr{flags: 1, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1228, csumStart: 20, csumOffset: 16}, pkt))
	pkt6, _ := large(src6, dst6, 100)
	f.Add(frame(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1, csumStart: 40, csumOffset: 16}, pkt6))
	f.Add(frame(vnetHdr{flags: 1, csumStart: 20, csumOffset: 6}, packettest.IP(src4, dst4, packet.ProtoUDP, packettest.UDP(1, 2))))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n int
		d := &Device{cfg: Config{
			Receive: func(p []byte) {
				if n++; n > len(b) || len(p) > len(b)+60 {
					t.Fatalf("passed on %d packets, the last %d bytes, from a %d-byte frame", n, len(p), len(b))
				}
			},
			ReceiveLarge: func(p []byte) bool { return len(p)%2 == 0 },
		}}
		d.handleFrame(b)
	})
}
