package portmap

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// UPnP-IGD, the Mapper's last resort when the router answers neither PCP nor NAT-PMP: an SSDP search
// on the LAN (multicast and unicast to the gateway), the device description over HTTP, then SOAP
// calls to its WAN connection service: GetExternalIPAddress, AddPortMapping, DeletePortMapping.
// Only the gateway is ever talked to over HTTP: an answer from anyone else, or a LOCATION, URLBase or
// control URL naming another host, is refused before any connection is made.

const (
	upnpHTTPTimeout = 5 * time.Second // per HTTP exchange with the gateway
	upnpPortTries   = 3               // external ports tried when the one asked for is taken
)

// ssdpGroup is SSDP's multicast group and port.
var ssdpGroup = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, 255, 250}), ssdpPort)

// igd is the gateway's WAN connection service as found by discovery, and the state of our mapping
// on it. Only the Mapper's goroutine uses it (and Close, once that has ended).
type igd struct {
	service string   // a wanServices type
	control *url.URL // its control URL, on the gateway
	port    uint16   // the external port mapped, or 0
	lease   uint32   // the lease asked for: the Mapper's lifetime, or 0 once the gateway wants permanent ones
}

// upnpMap makes or renews the mapping over UPnP-IGD (lifetime in seconds), discovering the gateway's
// service first if the Mapper has none yet.
func (m *Mapper) upnpMap(ctx context.Context, lifetime uint32) (Mapping, error) {
	if m.igd == nil {
		dev, err := m.discoverIGD(ctx)
		if err != nil {
			return Mapping{}, err
		}
		dev.lease = lifetime
		m.igd = dev
	}
	dev := m.igd
	out, err := m.soap(ctx, dev, "GetExternalIPAddress", nil)
	if err != nil {
		return Mapping{}, err
	}
	ext, err := netip.ParseAddr(out["NewExternalIPAddress"])
	if err != nil || !ext.Is4() || ext.IsUnspecified() || ext.IsLoopback() || ext.IsMulticast() {
		return Mapping{}, fmt.Errorf("upnp: unusable external address %q", out["NewExternalIPAddress"])
	}
	client, err := m.localAddr()
	if err != nil {
		return Mapping{}, err
	}
	port := dev.port
	if port == 0 {
		port = m.cfg.InternalPort
	}
	for try := 0; ; try++ {
		err = m.soapAdd(ctx, dev, client, port)
		if ue, ok := errors.AsType[*UPnPError](err); ok && ue.Code == upnpOnlyPermanent && dev.lease != 0 {
			dev.lease = 0
			err = m.soapAdd(ctx, dev, client, port)
		}
		if ue, ok := errors.AsType[*UPnPError](err); !ok || ue.Code != upnpConflict || try+1 >= upnpPortTries {
			break
		}
		port = randomPort()
	}
	if err != nil {
		return Mapping{}, err
	}
	dev.port = port
	life := time.Duration(dev.lease) * time.Second
	if dev.lease == 0 {
		life = m.cfg.Lifetime // permanent: renewed (re-added) on the usual schedule, deleted on Close
	}
	return Mapping{Protocol: ProtoUPnP, External: netip.AddrPortFrom(ext, port), Lifetime: life}, nil
}

// soapAdd maps external port to the node's internal port on client.
func (m *Mapper) soapAdd(ctx context.Context, dev *igd, client netip.Addr, port uint16) error {
	_, err := m.soap(ctx, dev, "AddPortMapping", [][2]string{
		{"NewRemoteHost", ""}, {"NewExternalPort", strconv.Itoa(int(port))}, {"NewProtocol", "UDP"},
		{"NewInternalPort", strconv.Itoa(int(m.cfg.InternalPort))}, {"NewInternalClient", client.String()},
		{"NewEnabled", "1"}, {"NewPortMappingDescription", "warren"}, {"NewLeaseDuration", strconv.FormatUint(uint64(dev.lease), 10)}})
	return err
}

// upnpDelete removes the mapping; one the gateway no longer has counts as removed.
func (m *Mapper) upnpDelete(ctx context.Context) error {
	dev := m.igd
	if dev == nil || dev.port == 0 {
		return nil
	}
	_, err := m.soap(ctx, dev, "DeletePortMapping", [][2]string{
		{"NewRemoteHost", ""}, {"NewExternalPort", strconv.Itoa(int(dev.port))}, {"NewProtocol", "UDP"}})
	if ue, ok := errors.AsType[*UPnPError](err); ok && ue.Code == upnpNoSuchEntry {
		err = nil
	}
	dev.port = 0
	return err
}

func randomPort() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return 1024 + binary.BigEndian.Uint16(b[:])%(65536-1024)
}

// localAddr is this host's address towards the gateway: the internal client of the mapping.
func (m *Mapper) localAddr() (netip.Addr, error) {
	conn, err := m.dial()
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	return netip.MustParseAddrPort(conn.LocalAddr().String()).Addr().Unmap(), nil
}

// discoverIGD searches the LAN for an internet gateway device (cfg.Tries rounds, waiting Timeout,
// doubling) and returns the WAN connection service of the first the gateway describes.
func (m *Mapper) discoverIGD(ctx context.Context) (*igd, error) {
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	targets := m.cfg.ssdp
	if targets == nil {
		targets = []netip.AddrPort{ssdpGroup, netip.AddrPortFrom(m.cfg.Gateway.Addr(), ssdpPort)}
	}
	gw := m.cfg.Gateway.Addr()
	buf := make([]byte, maxSSDPReply+1)
	wait := m.cfg.Timeout
	lastErr := errors.New("no answer to the SSDP search")
	for range m.cfg.Tries {
		sent := 0
		for _, to := range targets {
			for _, st := range igdTypes {
				if _, err := conn.WriteToUDPAddrPort(ssdpSearch(to.String(), st), to); err == nil {
					sent++
				} else {
					lastErr = fmt.Errorf("ssdp search to %s: %w", to, err)
				}
			}
		}
		if sent == 0 {
			return nil, fmt.Errorf("upnp: %w", lastErr)
		}
		deadline := time.Now().Add(wait)
		for ctx.Err() == nil {
			conn.SetReadDeadline(deadline)
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // the deadline, or an error a new round may not have
			}
			if from.Addr().Unmap() != gw {
				continue // only the gateway maps our port
			}
			loc, err := parseSSDP(buf[:n])
			if err != nil {
				lastErr = err
				continue
			}
			// The gateway's answer: its description is usable or the search has failed.
			return m.describe(ctx, loc)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wait *= 2
	}
	return nil, fmt.Errorf("upnp: %s: %w", gw, lastErr)
}

// describe fetches the device description at location, which must be on the gateway, and returns
// its WAN connection service.
func (m *Mapper) describe(ctx context.Context, location string) (*igd, error) {
	loc, err := m.gatewayURL(nil, location)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	body, err := m.fetch(req)
	if err != nil {
		return nil, err
	}
	service, control, base, err := parseDescription(body)
	if err != nil {
		return nil, err
	}
	if base != "" {
		if loc, err = m.gatewayURL(nil, base); err != nil {
			return nil, fmt.Errorf("%w (the description's URLBase)", err)
		}
	}
	cu, err := m.gatewayURL(loc, control)
	if err != nil {
		return nil, fmt.Errorf("%w (the description's controlURL)", err)
	}
	return &igd{service: service, control: cu}, nil
}

// gatewayURL resolves ref against base (nil: ref must be absolute) and refuses anything but plain
// HTTP to the gateway's address.
func (m *Mapper) gatewayURL(base *url.URL, ref string) (*url.URL, error) {
	var u *url.URL
	var err error
	if base != nil {
		u, err = base.Parse(ref)
	} else {
		u, err = url.Parse(ref)
	}
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	host, err := netip.ParseAddr(u.Hostname())
	if u.Scheme != "http" || u.User != nil || err != nil || host.Unmap() != m.cfg.Gateway.Addr() {
		return nil, fmt.Errorf("upnp: refusing %q: not plain HTTP to the gateway %s", u.Redacted(), m.cfg.Gateway.Addr())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("upnp: refusing %q: bad port", u.Redacted())
		}
	}
	return u, nil
}

// soap calls action on the gateway's service and returns its out-arguments (a refusal: *UPnPError).
func (m *Mapper) soap(ctx context.Context, dev *igd, action string, args [][2]string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dev.control.String(), bytes.NewReader(soapRequest(dev.service, action, args)))
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	req.Header.Set("Content-Type", `text/xml; charset="utf-8"`)
	req.Header.Set("SOAPAction", `"`+dev.service+"#"+action+`"`)
	body, err := m.fetch(req)
	if se, ok := errors.AsType[*statusError](err); ok && se.code == http.StatusInternalServerError {
		body, err = se.body, nil // a SOAP fault
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", action, err)
	}
	return parseSOAP(body, action)
}

// statusError: the gateway answered with a status other than 200.
type statusError struct {
	code int
	body []byte
}

func (e *statusError) Error() string { return fmt.Sprintf("upnp: HTTP status %d", e.code) }

// fetch does one HTTP exchange with the gateway and returns the body, at most maxUPnPBody bytes.
func (m *Mapper) fetch(req *http.Request) ([]byte, error) {
	resp, err := m.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUPnPBody+1))
	if err != nil {
		return nil, fmt.Errorf("upnp: %s: %w", req.URL.Redacted(), err)
	}
	if len(body) > maxUPnPBody {
		return nil, fmt.Errorf("upnp: %s: answer longer than %d bytes", req.URL.Redacted(), maxUPnPBody)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, body: body}
	}
	return body, nil
}

// httpClient talks to the gateway only: no proxy (the environment's HTTP_PROXY does not apply to the
// LAN), no redirects, no other address even if a URL names one, bounded in time and header size.
func (m *Mapper) httpClient() *http.Client {
	gw := m.cfg.Gateway.Addr()
	dialer := &net.Dialer{Timeout: upnpHTTPTimeout}
	return &http.Client{
		Timeout:       upnpHTTPTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				ap, err := netip.ParseAddrPort(addr)
				if err != nil || ap.Addr().Unmap() != gw {
					return nil, fmt.Errorf("refusing to connect to %s: not the gateway %s", addr, gw)
				}
				return dialer.DialContext(ctx, "tcp4", addr)
			},
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: 16 << 10,
			ResponseHeaderTimeout:  upnpHTTPTimeout,
		},
	}
}
