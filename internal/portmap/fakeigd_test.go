package portmap

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fake UPnP internet gateway device: an SSDP responder on loopback UDP and the description and
// WAN connection service over HTTP on loopback, for this package's tests only. Like miniupnpd, it
// describes the service in an embedded WANDevice > WANConnectionDevice.

// soapCall is a SOAP call the fake IGD received.
type soapCall struct {
	Action string
	Args   map[string]string
}

type fakeIGD struct {
	t        *testing.T
	ssdp     *net.UDPConn
	http     *httptest.Server
	calls    chan soapCall
	searches chan string // the ST of each search

	mu            sync.Mutex
	location      string // the LOCATION it answers; default its own description
	description   string // the description it serves; default igdDescription with its control URL
	permanentOnly bool   // AddPortMapping with a lease refused with 725
	taken         uint16 // an external port AddPortMapping refuses with 718
	mappings      map[uint16]string
}

const igdDescriptionFmt = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>%s</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

func startFakeIGD(t *testing.T) *fakeIGD {
	f := &fakeIGD{t: t, calls: make(chan soapCall, 64), searches: make(chan string, 64), mappings: map[uint16]string{}}
	var err error
	if f.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	f.http = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.serveSSDP() }()
	t.Cleanup(func() { f.ssdp.Close(); wg.Wait(); f.http.Close() })
	return f
}

func (f *fakeIGD) set(fn func(f *fakeIGD)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

// ssdpAddr is where the Mapper's searches must go (Config.ssdp).
func (f *fakeIGD) ssdpAddr() []netip.AddrPort {
	return []netip.AddrPort{netip.MustParseAddrPort(f.ssdp.LocalAddr().String())}
}

func (f *fakeIGD) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := f.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		_, st, _ := strings.Cut(msg, "\r\nST: ")
		st, _, _ = strings.Cut(st, "\r\n")
		if !strings.HasPrefix(msg, "M-SEARCH * HTTP/1.1\r\n") || !strings.Contains(msg, "MAN: \"ssdp:discover\"") {
			f.t.Errorf("fake IGD: bad search %q", msg)
			continue
		}
		f.searches <- st
		f.mu.Lock()
		loc := f.location
		f.mu.Unlock()
		if loc == "" {
			loc = f.http.URL + "/rootDesc.xml"
		}
		f.ssdp.WriteToUDPAddrPort([]byte("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: "+st+
			"\r\nUSN: uuid:fake::"+st+"\r\nEXT:\r\nSERVER: fake UPnP/1.1\r\nLOCATION: "+loc+"\r\n\r\n"), from)
	}
}

func (f *fakeIGD) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/rootDesc.xml":
		desc := f.description
		if desc == "" {
			desc = fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn")
		}
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, desc)
	case r.Method == http.MethodPost && r.URL.Path == "/ctl/IPConn":
		f.serveSOAP(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeIGD) serveSOAP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	var env soapEnvelope
	if err := xml.Unmarshal(b, &env); err != nil || len(env.Body.Any) != 1 {
		f.t.Errorf("fake IGD: bad SOAP request %q: %v", b, err)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	call := soapCall{Action: env.Body.Any[0].XMLName.Local, Args: map[string]string{}}
	for _, a := range env.Body.Any[0].Args {
		call.Args[a.XMLName.Local] = a.Value
	}
	const service = "urn:schemas-upnp-org:service:WANIPConnection:1"
	if want := `"` + service + "#" + call.Action + `"`; r.Header.Get("SOAPAction") != want || env.Body.Any[0].XMLName.Space != service {
		f.t.Errorf("fake IGD: SOAPAction %q, namespace %q; want %s", r.Header.Get("SOAPAction"), env.Body.Any[0].XMLName.Space, want)
	}
	f.calls <- call
	fault := func(code int) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">
<errorCode>%d</errorCode><errorDescription>refused</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code)
	}
	out := ""
	switch call.Action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + fakeExternal.String() + "</NewExternalIPAddress>"
	case "AddPortMapping":
		port, _ := strconv.Atoi(call.Args["NewExternalPort"])
		switch {
		case f.permanentOnly && call.Args["NewLeaseDuration"] != "0":
			fault(upnpOnlyPermanent)
			return
		case uint16(port) == f.taken:
			fault(upnpConflict)
			return
		}
		f.mappings[uint16(port)] = call.Args["NewInternalClient"] + ":" + call.Args["NewInternalPort"]
	case "DeletePortMapping":
		port, _ := strconv.Atoi(call.Args["NewExternalPort"])
		if _, ok := f.mappings[uint16(port)]; !ok {
			fault(upnpNoSuchEntry)
			return
		}
		delete(f.mappings, uint16(port))
	default:
		fault(401)
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`,
		call.Action, service, out, call.Action)
}

// nextCall returns the next SOAP call the fake IGD received.
func (f *fakeIGD) nextCall() soapCall {
	f.t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(10 * time.Second):
		f.t.Fatal("no SOAP call reached the fake IGD")
		return soapCall{}
	}
}

// closedUDPPort is a loopback UDP address nothing listens on: PCP and NAT-PMP get ICMP port
// unreachable at once, as from a router that speaks neither.
func closedUDPPort(t *testing.T) netip.AddrPort {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(c.LocalAddr().String())
	c.Close()
	return ap
}
