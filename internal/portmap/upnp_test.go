package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startUPnPMapper starts a Mapper whose router answers neither PCP nor NAT-PMP, with f as its UPnP
// gateway, on a fake clock.
func startUPnPMapper(t *testing.T, f *fakeIGD, c *fakeClock, opts ...func(*Config)) (*Mapper, chan Mapping) {
	t.Helper()
	changes := make(chan Mapping, 16)
	cfg := Config{Gateway: closedUDPPort(t), InternalPort: 41641, Lifetime: time.Hour,
		OnChange: func(mp Mapping) { changes <- mp }, Timeout: 2 * time.Second, Tries: 2, clock: c, ssdp: f.ssdpAddr()}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, changes
}

func wantCall(t *testing.T, f *fakeIGD, action string, args map[string]string) {
	t.Helper()
	c := f.nextCall()
	if c.Action != action {
		t.Fatalf("SOAP call %s %v, want %s", c.Action, c.Args, action)
	}
	for k, v := range args {
		if c.Args[k] != v {
			t.Errorf("%s: %s=%q, want %q (all: %v)", action, k, c.Args[k], v, c.Args)
		}
	}
}

// TestUPnPMapRenewDelete: a router that answers neither PCP nor NAT-PMP but UPnP-IGD gets an SSDP
// search for both IGD versions, then GetExternalIPAddress and AddPortMapping (UDP, the host's address
// as internal client, the Mapper's lifetime as lease); the renewal at half the lease goes straight
// to UPnP without a new search; Close deletes the mapping.
func TestUPnPMapRenewDelete(t *testing.T) {
	f := startFakeIGD(t)
	c := newFakeClock()
	m, changes := startUPnPMapper(t, f, c)
	want := Mapping{Protocol: ProtoUPnP, External: netip.AddrPortFrom(fakeExternal, 41641), Lifetime: time.Hour}
	if mp := nextChange(t, changes); mp != want {
		t.Fatalf("mapped %+v, want %+v", mp, want)
	}
	if m.Current().String() != "upnp 203.0.113.5:41641" {
		t.Errorf("current %v", m.Current())
	}
	if st := <-f.searches; st != igdTypes[0] {
		t.Errorf("first search for %q", st)
	}
	add := map[string]string{"NewRemoteHost": "", "NewExternalPort": "41641", "NewProtocol": "UDP", "NewInternalPort": "41641",
		"NewInternalClient": "127.0.0.1", "NewEnabled": "1", "NewLeaseDuration": "3600"}
	wantCall(t, f, "GetExternalIPAddress", nil)
	wantCall(t, f, "AddPortMapping", add)
	if d := c.wait(t); d != 30*time.Minute {
		t.Errorf("renewal after %v, want half the lease", d)
	}
	searches := len(f.searches)
	c.fire(30 * time.Minute)
	wantCall(t, f, "GetExternalIPAddress", nil)
	wantCall(t, f, "AddPortMapping", add)
	c.wait(t)
	if len(f.searches) != searches {
		t.Error("the renewal searched again")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f, "DeletePortMapping", map[string]string{"NewExternalPort": "41641", "NewProtocol": "UDP"})
	if len(f.mappings) != 0 {
		t.Errorf("mappings left on the gateway: %v", f.mappings)
	}
}

// TestUPnPPermanentOnly: a gateway that refuses leases (725) gets a permanent mapping (lease 0),
// renewed on the Mapper's lifetime without asking for a lease again, and deleted on Close.
func TestUPnPPermanentOnly(t *testing.T) {
	f := startFakeIGD(t)
	f.set(func(f *fakeIGD) { f.permanentOnly = true })
	c := newFakeClock()
	m, changes := startUPnPMapper(t, f, c)
	if mp := nextChange(t, changes); mp.Protocol != ProtoUPnP || mp.Lifetime != time.Hour {
		t.Fatalf("mapped %+v", mp)
	}
	wantCall(t, f, "GetExternalIPAddress", nil)
	wantCall(t, f, "AddPortMapping", map[string]string{"NewLeaseDuration": "3600"})
	wantCall(t, f, "AddPortMapping", map[string]string{"NewLeaseDuration": "0"})
	if d := c.wait(t); d != 30*time.Minute {
		t.Errorf("renewal after %v", d)
	}
	c.fire(30 * time.Minute)
	wantCall(t, f, "GetExternalIPAddress", nil)
	wantCall(t, f, "AddPortMapping", map[string]string{"NewLeaseDuration": "0"})
	c.wait(t)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f, "DeletePortMapping", map[string]string{"NewExternalPort": "41641"})
	if len(f.mappings) != 0 {
		t.Errorf("a permanent mapping left on the gateway: %v", f.mappings)
	}
}

// TestUPnPConflict: when the external port is another client's (718) the Mapper asks for another.
func TestUPnPConflict(t *testing.T) {
	f := startFakeIGD(t)
	f.set(func(f *fakeIGD) { f.taken = 41641 })
	_, changes := startUPnPMapper(t, f, newFakeClock())
	mp := nextChange(t, changes)
	if mp.Protocol != ProtoUPnP || mp.External.Port() == 41641 || mp.External.Port() < 1024 {
		t.Fatalf("mapped %+v, want another external port", mp)
	}
	wantCall(t, f, "GetExternalIPAddress", nil)
	wantCall(t, f, "AddPortMapping", map[string]string{"NewExternalPort": "41641"})
	wantCall(t, f, "AddPortMapping", map[string]string{"NewExternalPort": fmt.Sprint(mp.External.Port()), "NewInternalPort": "41641"})
}

// TestUPnPOnlyTheGateway: the Mapper talks HTTP to the gateway's address only. A LOCATION, URLBase
// or control URL naming another host (here 127.0.0.2, where a listener counts connections), an
// https or credentialed URL, a redirect, an oversized description or an SSDP answer from another
// address make no mapping, and nothing connects to the other host.
func TestUPnPOnlyTheGateway(t *testing.T) {
	other, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on loopback: %v", err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { other.Close() })
	elsewhere := "http://" + other.Addr().String()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere+"/rootDesc.xml", http.StatusFound))
	t.Cleanup(redirect.Close)

	t.Run("refused", func(t *testing.T) { refusals(t, elsewhere, redirect.URL) })
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections to the other host", n)
	}

	// An answer from another address than the gateway's is ignored: the search times out.
	f := startFakeIGD(t)
	m := &Mapper{cfg: Config{Gateway: netip.MustParseAddrPort("127.0.0.2:5351"), Timeout: 50 * time.Millisecond, Tries: 1, ssdp: f.ssdpAddr()}}
	if _, err := m.discoverIGD(t.Context()); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("an answer from 127.0.0.1 to a search for gateway 127.0.0.2: %v", err)
	}
}

// refusals runs TestUPnPOnlyTheGateway's cases in parallel.
func refusals(t *testing.T, elsewhere, redirect string) {
	for name, setup := range map[string]func(f *fakeIGD){
		"location":    func(f *fakeIGD) { f.location = elsewhere + "/rootDesc.xml" },
		"https":       func(f *fakeIGD) { f.location = strings.Replace(f.http.URL, "http:", "https:", 1) + "/rootDesc.xml" },
		"userinfo":    func(f *fakeIGD) { f.location = strings.Replace(f.http.URL, "//", "//u:p@", 1) + "/rootDesc.xml" },
		"redirect":    func(f *fakeIGD) { f.location = redirect + "/rootDesc.xml" },
		"control url": func(f *fakeIGD) { f.description = fmt.Sprintf(igdDescriptionFmt, elsewhere+"/ctl/IPConn") },
		"url base": func(f *fakeIGD) {
			f.description = strings.Replace(fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn"), "<device>", "<URLBase>"+elsewhere+"</URLBase><device>", 1)
		},
		"oversized": func(f *fakeIGD) {
			f.description = fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn") + "<!--" + strings.Repeat("x", maxUPnPBody) + "-->"
		},
		"no service": func(f *fakeIGD) {
			f.description = strings.ReplaceAll(fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn"), "WANIPConnection", "WANIPv6FirewallControl")
		},
		"hostname": func(f *fakeIGD) {
			f.location = strings.Replace(f.http.URL, "127.0.0.1", "localhost", 1) + "/rootDesc.xml"
		},
		"another port": func(f *fakeIGD) { f.location = "http://127.0.0.1:1/rootDesc.xml" }, // the gateway, but nothing there
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := startFakeIGD(t)
			f.set(setup)
			c := newFakeClock()
			var logged []string
			// The fake answers at once; the Mapper stops at the first answer from the gateway.
			m, _ := startUPnPMapper(t, f, c, func(cfg *Config) {
				cfg.Timeout, cfg.Tries = 5*time.Second, 1
				cfg.Log = func(msg string, args ...any) { logged = append(logged, fmt.Sprint(msg, args)) }
			})
			if d := c.wait(t); d != minRetry {
				t.Errorf("retry after %v, want a failure", d)
			}
			if m.Current().IsValid() || len(f.calls) > 0 {
				t.Errorf("mapped %v after %d SOAP calls", m.Current(), len(f.calls))
			}
			m.Close()
			if len(logged) != 1 || !strings.Contains(logged[0], "upnp") || strings.Contains(logged[0], "no answer to the SSDP search") {
				t.Errorf("logged %q", logged)
			}
			t.Log(logged)
		})
	}
}

func TestParseSSDP(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nst: " + igdTypes[1] + "\r\nLocation:  http://10.1.0.1:5000/rootDesc.xml \r\n\r\n"
	if loc, err := parseSSDP([]byte(ok)); err != nil || loc != "http://10.1.0.1:5000/rootDesc.xml" {
		t.Errorf("parseSSDP: %q, %v", loc, err)
	}
	for name, b := range map[string]string{
		"notify":      "NOTIFY * HTTP/1.1\r\nST: " + igdTypes[0] + "\r\nLOCATION: http://10.1.0.1/\r\n\r\n",
		"404":         "HTTP/1.1 404 Not Found\r\nST: " + igdTypes[0] + "\r\nLOCATION: http://10.1.0.1/\r\n\r\n",
		"no location": "HTTP/1.1 200 OK\r\nST: " + igdTypes[0] + "\r\n\r\n",
		"other st":    "HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://10.1.0.1/\r\n\r\n",
		"bad header":  "HTTP/1.1 200 OK\r\nST " + igdTypes[0] + "\r\nLOCATION: http://10.1.0.1/\r\n\r\n",
		"headers":     "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", maxSSDPHeaders) + "ST: " + igdTypes[0] + "\r\nLOCATION: http://10.1.0.1/\r\n\r\n",
		"huge":        ok + strings.Repeat(" ", maxSSDPReply),
	} {
		if loc, err := parseSSDP([]byte(b)); err == nil {
			t.Errorf("%s: parsed as %q", name, loc)
		}
	}
}

func TestParseDescription(t *testing.T) {
	service, control, base, err := parseDescription([]byte(fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn")))
	if err != nil || service != wanServices[1] || control != "/ctl/IPConn" || base != "" {
		t.Errorf("parseDescription: %q %q %q %v", service, control, base, err)
	}
	// WANIPConnection:2 is preferred to :1, whichever comes first; PPP is the last resort.
	two := strings.Replace(fmt.Sprintf(igdDescriptionFmt, "/ctl/IPConn"), "</serviceList>\n</device></deviceList></device></deviceList>",
		"<service><serviceType>"+wanServices[0]+"</serviceType><controlURL>/ctl/IPConn2</controlURL></service></serviceList>\n</device></deviceList></device></deviceList>", 1)
	if service, control, _, err := parseDescription([]byte(two)); err != nil || service != wanServices[0] || control != "/ctl/IPConn2" {
		t.Errorf("with WANIPConnection:2: %q %q %v", service, control, err)
	}
	deep := "<root><device>" + strings.Repeat("<deviceList><device>", maxDeviceDepth+1) + "<serviceList><service><serviceType>" + wanServices[1] +
		"</serviceType><controlURL>/c</controlURL></service></serviceList>" + strings.Repeat("</device></deviceList>", maxDeviceDepth+1) + "</device></root>"
	if _, _, _, err := parseDescription([]byte(deep)); err == nil {
		t.Error("a service nested deeper than maxDeviceDepth found")
	}
	for name, b := range map[string]string{"not xml": "{}", "other root": "<scpd></scpd>", "truncated": fmt.Sprintf(igdDescriptionFmt, "/c")[:400]} {
		if _, _, _, err := parseDescription([]byte(b)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestParseSOAP(t *testing.T) {
	resp := `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="x">` +
		`<NewExternalIPAddress> 203.0.113.5 </NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>`
	if out, err := parseSOAP([]byte(resp), "GetExternalIPAddress"); err != nil || out["NewExternalIPAddress"] != "203.0.113.5" {
		t.Errorf("parseSOAP: %v, %v", out, err)
	}
	if _, err := parseSOAP([]byte(resp), "AddPortMapping"); err == nil {
		t.Error("the answer to another action parsed")
	}
	fault := `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError><errorCode>725</errorCode>` +
		`<errorDescription>OnlyPermanentLeasesSupported</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`
	_, err := parseSOAP([]byte(fault), "AddPortMapping")
	if ue, ok := errors.AsType[*UPnPError](err); !ok || ue.Code != 725 {
		t.Errorf("fault: %v", err)
	}
	for name, b := range map[string]string{
		"fault without code": strings.Replace(fault, "725", "x", 1),
		"two responses":      strings.Replace(resp, "</s:Body>", "<u:GetExternalIPAddressResponse/></s:Body>", 1),
		"duplicate argument": strings.Replace(resp, "</u:Get", "<NewExternalIPAddress>1.2.3.4</NewExternalIPAddress></u:Get", 1),
		"many arguments":     strings.Replace(resp, "</u:Get", strings.Repeat("<a/>", maxSOAPArgs+1)+"</u:Get", 1),
		"not soap":           "<html></html>",
	} {
		if out, err := parseSOAP([]byte(b), "GetExternalIPAddress"); err == nil {
			t.Errorf("%s: parsed as %v", name, out)
		}
	}
}
