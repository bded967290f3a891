package packet

import (
	"bytes"
	"fmt"
	"testing"

	pt "github.com/warren-net/warren/internal/packet/packettest"
)

// FuzzParse feeds Parse what a peer may send. It must not panic; what it accepts must agree with
// Addrs, keep its slices inside the packet, and give flows, RSTs and raised MSS options that read back.
func FuzzParse(f *testing.F) {
	for _, seed := range [][]byte{
		pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPSYN, "")),
		pt.IP(peer6, self6, ProtoTCP, pt.TCP(5000, 22, TCPACK|TCPFIN, "data")),
		pt.IP(peer4, self4, ProtoUDP, pt.UDP(1, 27015)),
		pt.IP(peer6, self6, ProtoICMPv6, pt.ICMP(128, 5, nil)),
		pt.IP(peer4, self4, ProtoICMP, pt.ICMP(3, 0, pt.IP(self4, peer4, ProtoUDP, pt.UDP(9, 9)))),
		pt.IP(peer6, self6, 0, append([]byte{44, 0, 0, 0, 0, 0, 0, 0, ProtoUDP, 0, 0, 1, 0, 0, 0, 1}, pt.UDP(1, 2)...)),
		pt.IP(peer6, self6, 60, append([]byte{ProtoTCP, 0, 1, 4, 0, 0, 0, 0}, pt.TCP(1, 2, TCPSYN, "")...)),
		pt.IP(peer4, self4, ProtoTCP, pt.TCP(5000, 22, TCPACK, "")),
		pt.IP(peer6, self6, ProtoTCP, pt.TCP(5000, 22, TCPACK, "")),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, ok := Parse(pkt)
		if PureACK(pkt) && (!ok || p.Proto != ProtoTCP || p.Fragment || p.TCPFlags != TCPACK || len(p.Transport) < 20 ||
			len(p.Transport) != int(p.Transport[12]>>4)*4) {
			t.Fatalf("PureACK, but Parse says %+v (ok=%v)", p, ok)
		}
		src, dst, aok := Addrs(pkt)
		if !ok {
			return
		}
		if !aok || src != p.Src || dst != p.Dst {
			t.Fatalf("Parse says %v → %v, Addrs %v → %v (ok=%v)", p.Src, p.Dst, src, dst, aok)
		}
		if len(p.Transport) > 0 && !bytes.HasSuffix(pkt, p.Transport) {
			t.Fatal("transport is not the packet's tail")
		}
		if len(p.ICMPQuote) > 0 && !bytes.HasSuffix(pkt, p.ICMPQuote) {
			t.Fatal("ICMP quote is not the packet's tail")
		}
		if p.Fragment && (p.SPort != 0 || p.DPort != 0 || p.TCPFlags != 0 || p.Transport != nil) {
			t.Fatalf("later fragment with transport fields: %+v", p)
		}
		if k, ok := p.OutboundFlow(false); ok && (k.Local != p.Src || k.Proto != p.Proto) {
			t.Fatalf("outbound flow %+v of %+v", k, p)
		}
		if k := p.InboundFlow(); k.Local != p.Dst || k.Remote != p.Src {
			t.Fatalf("inbound flow %+v of %+v", k, p)
		}
		if p.ICMPError {
			Parse(p.ICMPQuote)
		}
		if RaiseMSS(&p, 65000) {
			if q, ok := Parse(pkt); !ok || q.Src != p.Src || q.Dst != p.Dst || q.SPort != p.SPort || q.TCPFlags != p.TCPFlags {
				t.Fatalf("RaiseMSS changed more than the option: %+v, then %+v", p, q)
			}
		}
		if rst := TCPReset(&p, pkt); rst != nil {
			r, ok := Parse(rst)
			if !ok || r.Src != p.Dst || r.Dst != p.Src || r.SPort != p.DPort || r.DPort != p.SPort || r.TCPFlags&TCPRST == 0 {
				t.Fatalf("RST %+v for %+v", r, p)
			}
			if !checksumsVerify(rst, &r) {
				t.Fatal("RST with a bad checksum")
			}
		}
	})
}

// checksumRef is RFC 1071's sum word by word: what Checksum must equal.
func checksumRef(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// FuzzChecksum: Checksum (eight bytes at a time) equals the word-by-word sum for any bytes and start.
func FuzzChecksum(f *testing.F) {
	f.Add(uint16(0), []byte{})
	f.Add(uint16(0xffff), bytes.Repeat([]byte{0xff}, 23))
	f.Add(uint16(1), []byte("an odd number of bytes"))
	f.Fuzz(func(t *testing.T, sum uint16, b []byte) {
		if got, want := Checksum(sum, b), checksumRef(sum, b); got != want {
			t.Fatalf("Checksum(%#x, %x) = %#x, want %#x", sum, b, got, want)
		}
	})
}

// BenchmarkChecksum sums a 64 KiB TSO segment (tun's large-segment cut) and a 1280-byte packet;
// "ref" is the word-by-word loop Checksum replaced.
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{1280, 65535} {
		buf := bytes.Repeat([]byte{0xa5, 0x5a, 0xff}, n/3+1)[:n]
		for name, sum := range map[string]func(uint16, []byte) uint16{"fast": Checksum, "ref": checksumRef} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				for b.Loop() {
					sum(0, buf)
				}
			})
		}
	}
}
