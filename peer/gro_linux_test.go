package peer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// groOOB returns the control message the kernel attaches to a coalesced read of segments of size seg.
func groOOB(seg int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgSpace(0):], uint32(seg))
	return b
}

// scriptedBatch hands out one prepared message per ReadBatch call, then io.EOF.
type scriptedBatch struct {
	msgs []ipv4.Message // Buffers[0][:N] and OOB[:NN] are what a read returns
}

func (s *scriptedBatch) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(s.msgs) == 0 {
		return 0, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	ms[0].N = copy(ms[0].Buffers[0], m.Buffers[0])
	ms[0].NN = copy(ms[0].OOB, m.OOB)
	ms[0].Addr = m.Addr
	return 1, nil
}

// readBufSize is the buffer readAll gives each message.
const readBufSize = 1500

// readAll reads datagrams from g with slots messages per call until it fails.
func readAll(t testing.TB, g *groReader, slots int) (got [][]byte, addrs []net.Addr, oobs [][]byte, err error) {
	ms := make([]ipv4.Message, slots)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, readBufSize)}
		ms[i].OOB = make([]byte, 128)
	}
	for {
		n, err := g.ReadBatch(ms, 0)
		if err != nil {
			return got, addrs, oobs, err
		}
		if n == 0 || n > slots {
			t.Fatalf("ReadBatch returned %d messages for %d slots", n, slots)
		}
		for _, m := range ms[:n] {
			got = append(got, bytes.Clone(m.Buffers[0][:m.N]))
			addrs = append(addrs, m.Addr)
			oobs = append(oobs, bytes.Clone(m.OOB[:m.NN]))
		}
	}
}

// TestGROReaderSplits: a coalesced read comes back as its datagrams in order, each with the read's
// address and control messages, over as many calls as the caller's slots need; an empty datagram
// is still one.
func TestGROReaderSplits(t *testing.T) {
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4242}
	payload := make([]byte, 250)
	for i := range payload {
		payload[i] = byte(i)
	}
	oob := groOOB(100)
	src := &scriptedBatch{msgs: []ipv4.Message{
		{Buffers: [][]byte{payload}, OOB: oob, Addr: from},
		{Buffers: [][]byte{{}}, Addr: from},
		{Buffers: [][]byte{[]byte("single")}, Addr: from},
	}}
	got, addrs, oobs, err := readAll(t, newGROReader(src), 2)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("read ended with %v, want the source's io.EOF", err)
	}
	want := [][]byte{payload[:100], payload[100:200], payload[200:], {}, []byte("single")}
	if len(got) != len(want) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("datagram %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
		if addrs[i] != net.Addr(from) {
			t.Errorf("datagram %d from %v, want %v", i, addrs[i], from)
		}
	}
	for i := range 3 {
		if !bytes.Equal(oobs[i], oob) {
			t.Errorf("datagram %d lost the read's control messages", i)
		}
	}
}

// FuzzGROSplit: whatever the segment size the kernel reports, the datagrams add up to the read,
// each at most one segment long, and none is lost or invented.
func FuzzGROSplit(f *testing.F) {
	f.Add([]byte("abcdefghij"), uint16(3), uint8(2))
	f.Add([]byte{}, uint16(0), uint8(1))
	f.Add(make([]byte, 3000), uint16(1452), uint8(8))
	f.Add(make([]byte, 3000), uint16(readBufSize+4), uint8(4)) // segments longer than the caller's buffers
	f.Fuzz(func(t *testing.T, data []byte, seg uint16, slots uint8) {
		if len(data) > groBufSize {
			data = data[:groBufSize]
		}
		slots = max(slots%16, 1)
		src := &scriptedBatch{msgs: []ipv4.Message{{Buffers: [][]byte{data}, OOB: groOOB(int(seg))}}}
		got, _, _, err := readAll(t, newGROReader(src), int(slots))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("read ended with %v", err)
		}
		size := len(data)
		if int(seg) > 0 && int(seg) < size {
			size = int(seg)
		}
		var want [][]byte // the segments, each cut to the caller's buffer as the kernel would
		for off := 0; off == 0 || off < len(data); off += max(size, 1) {
			d := data[off:min(off+size, len(data))]
			want = append(want, d[:min(len(d), readBufSize)])
		}
		if len(got) != len(want) {
			t.Fatalf("%d datagrams from %d bytes in segments of %d, want %d", len(got), len(data), size, len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("datagram %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
			}
		}
	})
}

// countingBatch counts the messages the kernel returned.
type countingBatch struct {
	batchReader
	reads int
}

func (c *countingBatch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := c.batchReader.ReadBatch(ms, flags)
	c.reads += n
	return n, err
}

// TestGROReaderLoopback: a GSO batch sent over loopback to a socket with UDP_GRO arrives in one
// read and leaves the reader as the sender's datagrams.
func TestGROReaderLoopback(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if !enableGRO(rc) {
		t.Skip("this kernel has no UDP_GRO")
	}
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	const seg, segs = 1200, 11
	batch := make([]byte, seg*(segs-1)+500)
	for i := range batch {
		batch[i] = byte(i / seg)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgSpace(0):], seg)
	if _, _, err := sc.WriteMsgUDP(batch, oob, rc.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Skipf("this kernel cannot send with UDP_SEGMENT: %v", err)
	}
	counter := &countingBatch{batchReader: ipv4.NewPacketConn(rc)}
	g := newGROReader(counter)
	rc.SetReadDeadline(time.Now().Add(10 * time.Second)) // a safety net: the data is already there
	ms := make([]ipv4.Message, 4)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1452)}
		ms[i].OOB = make([]byte, 128)
	}
	var got [][]byte
	for len(got) < segs {
		n, err := g.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range ms[:n] {
			got = append(got, bytes.Clone(m.Buffers[0][:m.N]))
			if ua, _ := m.Addr.(*net.UDPAddr); ua == nil || ua.Port != sc.LocalAddr().(*net.UDPAddr).Port {
				t.Errorf("datagram %d from %v, want the sender %v", len(got)-1, m.Addr, sc.LocalAddr())
			}
		}
	}
	for i, d := range got {
		want := batch[i*seg : min((i+1)*seg, len(batch))]
		if !bytes.Equal(d, want) {
			t.Errorf("datagram %d: %d bytes, want %d bytes of segment %d", i, len(d), len(want), i)
		}
	}
	if counter.reads != 1 {
		t.Errorf("the kernel returned %d messages for one GSO batch, want 1 coalesced read", counter.reads)
	}
}
