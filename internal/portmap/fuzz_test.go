package portmap

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// TestDecodeStrict: wrong sizes, versions and opcodes do not decode.
func TestDecodeStrict(t *testing.T) {
	addr := pmpResponseBytes(pmpOpAddr, resultSuccess, []byte{203, 0, 113, 5})
	if r, err := decodePMP(addr, pmpOpAddr); err != nil || r.External != fakeExternal {
		t.Errorf("address response: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{"short": addr[:11], "long": append(addr, 0), "tiny": addr[:7]} {
		if _, err := decodePMP(b, pmpOpAddr); err == nil {
			t.Errorf("%s address response decoded", name)
		}
	}
	if _, err := decodePMP(addr, pmpOpMapUDP); err == nil {
		t.Error("an address response decoded as a map response")
	}
	var nonce [12]byte
	ok := pcpResponseBytes(resultSuccess, 60, nonce, 1, netip.MustParseAddrPort("203.0.113.5:2"))
	if r, err := decodePCP(ok); err != nil || r.External != netip.MustParseAddrPort("203.0.113.5:2") || r.Lifetime != 60 {
		t.Errorf("PCP response: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{"short": ok[:56], "odd": append(ok, 0), "header only": ok[:24],
		"huge": make([]byte, 1104)} {
		if _, err := decodePCP(b); err == nil {
			t.Errorf("%s PCP response decoded", name)
		}
	}
	tcp := append([]byte(nil), ok...)
	tcp[36] = 6
	if _, err := decodePCP(tcp); err == nil {
		t.Error("a TCP mapping decoded")
	}
	if _, err := decodePCP(pmpResponseBytes(pcpOpMap, resultUnsuppVersion, nil)); err != errUnsuppVersion {
		t.Errorf("NAT-PMP's Unsupported Version: %v", err)
	}
}

func FuzzDecodePMP(f *testing.F) {
	f.Add(pmpResponseBytes(pmpOpAddr, resultSuccess, []byte{203, 0, 113, 5}), byte(0))
	f.Add(pmpResponseBytes(pmpOpMapUDP, resultSuccess, []byte{0, 1, 0, 2, 0, 0, 0, 60}), byte(1))
	f.Add(pmpResponseBytes(pmpOpMapUDP, 3, nil), byte(1))
	f.Fuzz(func(t *testing.T, b []byte, op byte) {
		r, err := decodePMP(b, op)
		if err != nil {
			return
		}
		if len(b) < pmpErrorLen || r.Op != op || (r.Result == resultSuccess && op == pmpOpAddr && (len(b) != pmpAddrResponseLen || !r.External.Is4())) ||
			(r.Result == resultSuccess && op == pmpOpMapUDP && len(b) != pmpMapResponseLen) || (r.Result == resultSuccess && op > pmpOpMapUDP) {
			t.Errorf("decoded %x (op %d) as %+v", b, op, r)
		}
	})
}

func FuzzDecodePCP(f *testing.F) {
	var nonce [12]byte
	f.Add(pcpResponseBytes(resultSuccess, 60, nonce, 1, netip.MustParseAddrPort("203.0.113.5:2")))
	f.Add(pcpResponseBytes(2, 0, nonce, 1, netip.AddrPort{})[:24])
	f.Add(pmpResponseBytes(pcpOpMap, resultUnsuppVersion, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCP(b)
		if err != nil {
			return
		}
		if len(b) < 24 || len(b) > pcpMaxLen || len(b)%4 != 0 || (r.Result == resultSuccess && (len(b) < pcpMapLen || b[36] != protoUDP)) {
			t.Errorf("decoded %x as %+v", b, r)
		}
	})
}

func FuzzParseSSDP(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + igdTypes[0] + "\r\nLOCATION: http://10.1.0.1:5000/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\nst:" + igdTypes[1] + "\nlocation:x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		loc, err := parseSSDP(b)
		if err == nil && (loc == "" || len(b) > maxSSDPReply) {
			t.Errorf("parsed %q as location %q", b, loc)
		}
	})
}

func FuzzParseDescription(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn")))
	f.Add([]byte("<root><URLBase>http://10.1.0.1/</URLBase><device><serviceList><service><serviceType>" + wanServices[2] +
		"</serviceType><controlURL>c</controlURL></service></serviceList></device></root>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		service, control, _, err := parseDescription(b)
		if err == nil && (!slices.Contains(wanServices, service) || control == "" || len(b) > maxUPnPBody) {
			t.Errorf("parsed %q as %q %q", b, service, control)
		}
	})
}

func FuzzParseSOAP(f *testing.F) {
	f.Add([]byte(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMappingResponse xmlns:u="x"></u:AddPortMappingResponse></s:Body></s:Envelope>`))
	f.Add([]byte(`<s:Envelope><s:Body><u:AddPortMappingResponse><a>1</a><b> 2 </b></u:AddPortMappingResponse></s:Body></s:Envelope>`))
	f.Add([]byte(`<Envelope><Body><Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>x</errorDescription></UPnPError></detail></Fault></Body></Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := parseSOAP(b, "AddPortMapping")
		if ue, ok := errors.AsType[*UPnPError](err); ok && (ue.Code <= 0 || ue.Code > upnpMaxErrorCode || len(ue.Description) > 4*upnpErrDescription+2) {
			t.Errorf("parsed %q as %v", b, ue)
		}
		if err == nil && (len(out) > maxSOAPArgs || len(b) > maxUPnPBody) {
			t.Errorf("parsed %q as %v", b, out)
		}
	})
}
