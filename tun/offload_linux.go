package tun

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/internal/packet"
)

// The device is created with IFF_VNET_HDR: every packet read or written starts with a struct
// virtio_net_hdr (in the host's byte order), which says how the kernel left the packet: a checksum
// to complete (NEEDS_CSUM) and, with TCP segmentation offload on (Config.ReceiveLarge), a TCP
// segment of up to 64 KiB that stands for several of the MSS (gso_size). Written packets carry a
// zero header: complete, one segment.
const (
	vnetHdrLen = 10
	gsoECN     = 0x80 // VIRTIO_NET_HDR_GSO_ECN, or'ed into gso_type
	// maxFrame is the largest read: the header and a 64 KiB IP packet.
	maxFrame = vnetHdrLen + 65535
)

// vnetHdr is a struct virtio_net_hdr.
type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{flags: b[0], gsoType: b[1], hdrLen: binary.NativeEndian.Uint16(b[2:]),
		gsoSize: binary.NativeEndian.Uint16(b[4:]), csumStart: binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:])}
}

// enableOffload turns on checksum and TCP segmentation offload for the device of fd: the kernel
// then sends TCP in segments of up to 64 KiB and leaves TCP and UDP checksums to us.
func enableOffload(fd int) error {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
}

// hasVnetHdr reports whether the TUN device of fd was created with IFF_VNET_HDR.
func hasVnetHdr(fd int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil || unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr) != nil {
		return false
	}
	return ifr.Uint16()&unix.IFF_VNET_HDR != 0
}

// handleFrame hands the packet of one read of a device with IFF_VNET_HDR to Receive, or to
// ReceiveLarge, completing what the kernel left to us; frames it cannot make sense of are dropped
// and counted.
func (d *Device) handleFrame(frame []byte) {
	if len(frame) < vnetHdrLen {
		d.Dropped.Add(1)
		return
	}
	h := parseVnetHdr(frame)
	pkt := frame[vnetHdrLen:]
	switch h.gsoType &^ gsoECN {
	case unix.VIRTIO_NET_HDR_GSO_NONE:
		if h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !completeChecksum(pkt, int(h.csumStart), int(h.csumOffset)) {
			d.Dropped.Add(1)
			return
		}
		d.cfg.Receive(pkt)
	case unix.VIRTIO_NET_HDR_GSO_TCPV4, unix.VIRTIO_NET_HDR_GSO_TCPV6:
		hdrLen, ok := tcpHeaderLen(pkt)
		if !ok || h.gsoSize == 0 {
			d.Dropped.Add(1)
			return
		}
		setIPLength(pkt)
		if d.cfg.ReceiveLarge != nil && d.cfg.ReceiveLarge(pkt) {
			d.Large.Add(1)
			return
		}
		d.split(pkt, hdrLen, int(h.gsoSize))
	default: // UDP segmentation and the like: never turned on
		d.Dropped.Add(1)
	}
}

// completeChecksum finishes a checksum the kernel left partial: the field at start+offset holds
// the pseudo-header's sum, and the checksum covers pkt[start:].
func completeChecksum(pkt []byte, start, offset int) bool {
	if start >= len(pkt) || start+offset+2 > len(pkt) {
		return false
	}
	sum := ^packet.Checksum(0, pkt[start:])
	if sum == 0 && offset == 6 { // UDP: 0 means "no checksum"
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[start+offset:], sum)
	return true
}

// tcpHeaderLen returns the length of the IP and TCP headers of an IPv4 or IPv6 TCP segment (IPv6
// without extension headers, as the kernel's TSO makes them), if they are there in full.
func tcpHeaderLen(pkt []byte) (int, bool) {
	if len(pkt) < 1 {
		return 0, false
	}
	var ipLen int
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != packet.ProtoTCP {
			return 0, false
		}
		ipLen = int(pkt[0]&0x0f) * 4
	case 6:
		if len(pkt) < 40 || pkt[6] != packet.ProtoTCP {
			return 0, false
		}
		ipLen = 40
	default:
		return 0, false
	}
	if ipLen < 20 || len(pkt) < ipLen+20 {
		return 0, false
	}
	n := ipLen + int(pkt[ipLen+12]>>4)*4
	if n < ipLen+20 || n > len(pkt) {
		return 0, false
	}
	return n, true
}

// setIPLength sets the length field of IP packet pkt (whose header tcpHeaderLen checked) to its
// size, and an IPv4 header's checksum.
func setIPLength(pkt []byte) {
	if pkt[0]>>4 == 4 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		hl := int(pkt[0]&0x0f) * 4
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], ^packet.Checksum(0, pkt[:hl]))
		return
	}
	binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
}

// split cuts TCP segment pkt (hdrLen bytes of IP and TCP headers) into segments of mss payload
// bytes with full headers and checksums, as the kernel's segmentation would, and hands each to
// Receive: for a large segment that ReceiveLarge did not take.
func (d *Device) split(pkt []byte, hdrLen, mss int) {
	v4 := pkt[0]>>4 == 4
	ipLen := 40
	if v4 {
		ipLen = int(pkt[0]&0x0f) * 4
	}
	seq := binary.BigEndian.Uint32(pkt[ipLen+4:])
	flags := pkt[ipLen+13]
	var id uint16
	if v4 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	seg := d.segBuf[:0]
	payload := pkt[hdrLen:]
	for i := 0; len(payload) > 0; i++ {
		n := min(mss, len(payload))
		seg = append(append(seg[:0], pkt[:hdrLen]...), payload[:n]...)
		payload = payload[n:]
		t := seg[ipLen:]
		binary.BigEndian.PutUint32(t[4:], seq)
		seq += uint32(n)
		f := flags
		if i > 0 {
			f &^= 0x80 // CWR only on the first segment
		}
		if len(payload) > 0 {
			f &^= packet.TCPFIN | 0x08 // FIN and PSH only on the last
		}
		t[13] = f
		if v4 {
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
		}
		setIPLength(seg)
		t[16], t[17] = 0, 0
		binary.BigEndian.PutUint16(t[16:], ^packet.Checksum(pseudoSum(seg, v4, len(t)), t))
		d.cfg.Receive(seg)
	}
	d.segBuf = seg
}

// pseudoSum is the sum of the TCP pseudo-header of IP packet pkt with a transport part of n bytes.
func pseudoSum(pkt []byte, v4 bool, n int) uint16 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	if v4 {
		s := packet.Checksum(0, pkt[12:20])
		return packet.Checksum(s, []byte{0, packet.ProtoTCP, b[2], b[3]})
	}
	s := packet.Checksum(0, pkt[8:40])
	return packet.Checksum(s, []byte{b[0], b[1], b[2], b[3], 0, 0, 0, packet.ProtoTCP})
}

// vnetWriter writes one packet behind a zero virtio_net_hdr with writev, without allocating: its
// write function is made once, and the writers are pooled.
type vnetWriter struct {
	iov   [2]unix.Iovec
	n     int
	errno unix.Errno
	write func(fd uintptr) bool
}

var zeroVnetHdr [vnetHdrLen]byte

var vnetWriters = sync.Pool{New: func() any {
	w := &vnetWriter{}
	w.iov[0].Base = &zeroVnetHdr[0]
	w.iov[0].SetLen(vnetHdrLen)
	w.write = func(fd uintptr) bool {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), 2)
		if e == unix.EAGAIN {
			return false
		}
		w.n, w.errno = int(r), e
		return true
	}
	return w
}}

// writeVnet writes pkt behind a zero header to the device.
func (d *Device) writeVnet(pkt []byte) (int, error) {
	if len(pkt) == 0 {
		return 0, nil
	}
	w := vnetWriters.Get().(*vnetWriter)
	w.iov[1].Base = &pkt[0]
	w.iov[1].SetLen(len(pkt))
	w.n, w.errno = 0, 0
	err := d.rc.Write(w.write)
	n, errno := w.n, w.errno
	w.iov[1].Base = nil
	vnetWriters.Put(w)
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return max(n-vnetHdrLen, 0), nil
}
