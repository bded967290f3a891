package packet

import (
	"bytes"
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
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, ok := Parse(pkt)
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
