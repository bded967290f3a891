package portmap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// UPnP-IGD on the wire: the SSDP search and its answer, the device description and the SOAP calls.
// Every parser here takes input the LAN can send; each has a size limit and a fuzz target.

const (
	ssdpPort       = 1900
	maxSSDPReply   = 2048     // a search answer is a few hundred bytes
	maxSSDPHeaders = 32       // header lines of an answer read at most
	maxUPnPBody    = 64 << 10 // a description or SOAP answer read at most
	maxDeviceDepth = 8        // nesting of embedded devices walked at most
	maxSOAPArgs    = 32       // out-arguments of one SOAP answer read at most
)

// The device types an SSDP search asks for, and the WAN connection services that map ports, the
// preferred first.
var (
	igdTypes    = []string{"urn:schemas-upnp-org:device:InternetGatewayDevice:1", "urn:schemas-upnp-org:device:InternetGatewayDevice:2"}
	wanServices = []string{"urn:schemas-upnp-org:service:WANIPConnection:2", "urn:schemas-upnp-org:service:WANIPConnection:1",
		"urn:schemas-upnp-org:service:WANPPPConnection:1"}
)

// UPnP error codes (UPnP-gw-WANIPConnection) the Mapper acts on.
const (
	upnpConflict       = 718 // ConflictInMappingEntry: the external port is another client's
	upnpOnlyPermanent  = 725 // OnlyPermanentLeasesSupported: ask again with lease 0
	upnpNoSuchEntry    = 714 // NoSuchEntryInArray: a delete of a mapping that is gone
	upnpMaxErrorCode   = 9999
	upnpErrDescription = 256 // bytes of an errorDescription kept
)

// ssdpSearch is an M-SEARCH for device type st, sent to host (the multicast group or the gateway).
func ssdpSearch(host, st string) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\nHOST: " + host + "\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + st + "\r\n\r\n")
}

// parseSSDP returns the LOCATION of an answer to a search for an internet gateway device: an HTTP
// 200 status line, then headers, ST one of igdTypes.
func parseSSDP(b []byte) (string, error) {
	if len(b) > maxSSDPReply {
		return "", fmt.Errorf("ssdp: answer of %d bytes, more than %d", len(b), maxSSDPReply)
	}
	lines := strings.Split(string(b), "\n")
	status := strings.Fields(strings.TrimSuffix(lines[0], "\r"))
	if len(status) < 2 || (status[0] != "HTTP/1.1" && status[0] != "HTTP/1.0") || status[1] != "200" {
		return "", errors.New("ssdp: not an HTTP 200 answer")
	}
	var location, st string
	for i, line := range lines[1:] {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break
		}
		if i >= maxSSDPHeaders {
			return "", errors.New("ssdp: too many header lines")
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return "", fmt.Errorf("ssdp: malformed header line %q", line)
		}
		switch value = strings.TrimSpace(value); strings.ToUpper(strings.TrimSpace(name)) {
		case "LOCATION":
			location = value
		case "ST":
			st = value
		}
	}
	switch {
	case location == "":
		return "", errors.New("ssdp: answer without LOCATION")
	case !slices.Contains(igdTypes, st):
		return "", fmt.Errorf("ssdp: answer for %q, not an internet gateway device", st)
	}
	return location, nil
}

// A device description (UPnP Device Architecture 2.3), the parts the Mapper reads.
type xmlRoot struct {
	XMLName xml.Name  `xml:"root"`
	URLBase string    `xml:"URLBase"`
	Device  xmlDevice `xml:"device"`
}

type xmlDevice struct {
	Services []xmlService `xml:"serviceList>service"`
	Devices  []xmlDevice  `xml:"deviceList>device"`
}

type xmlService struct {
	Type       string `xml:"serviceType"`
	ControlURL string `xml:"controlURL"`
}

// parseDescription finds the WAN connection service a device description offers (the first of
// wanServices in preference order, in the root device or one embedded at most maxDeviceDepth deep):
// its type and control URL (as written: relative to base, the description's URLBase if it has one).
func parseDescription(b []byte) (service, control, base string, err error) {
	if len(b) > maxUPnPBody {
		return "", "", "", fmt.Errorf("upnp: description of %d bytes, more than %d", len(b), maxUPnPBody)
	}
	var root xmlRoot
	if err := xml.Unmarshal(b, &root); err != nil {
		return "", "", "", fmt.Errorf("upnp: description: %w", err)
	}
	found := map[string]string{}
	var walk func(d *xmlDevice, depth int)
	walk = func(d *xmlDevice, depth int) {
		for _, s := range d.Services {
			if _, ok := found[s.Type]; !ok && slices.Contains(wanServices, s.Type) && s.ControlURL != "" {
				found[s.Type] = s.ControlURL
			}
		}
		if depth < maxDeviceDepth {
			for i := range d.Devices {
				walk(&d.Devices[i], depth+1)
			}
		}
	}
	walk(&root.Device, 0)
	for _, s := range wanServices {
		if c, ok := found[s]; ok {
			return s, c, strings.TrimSpace(root.URLBase), nil
		}
	}
	return "", "", "", errors.New("upnp: the device offers no WAN IP or PPP connection service")
}

// soapRequest is the body of a SOAP call of action on service with the arguments in order.
func soapRequest(service, action string, args [][2]string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?>` + "\r\n" + `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>`)
	b.WriteString("<u:" + action + ` xmlns:u="`)
	xml.EscapeText(&b, []byte(service))
	b.WriteString(`">`)
	for _, a := range args {
		b.WriteString("<" + a[0] + ">")
		xml.EscapeText(&b, []byte(a[1]))
		b.WriteString("</" + a[0] + ">")
	}
	b.WriteString("</u:" + action + "></s:Body></s:Envelope>\r\n")
	return b.Bytes()
}

// A SOAP answer: the action's response element with its out-arguments, or a fault with a UPnP error.
type soapEnvelope struct {
	XMLName xml.Name `xml:"Envelope"`
	Body    struct {
		Fault *struct {
			Code        string `xml:"detail>UPnPError>errorCode"`
			Description string `xml:"detail>UPnPError>errorDescription"`
		} `xml:"Fault"`
		Any []struct {
			XMLName xml.Name
			Args    []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		} `xml:",any"`
	} `xml:"Body"`
}

// UPnPError is a gateway's refusal of a SOAP call: the UPnPError in its fault.
type UPnPError struct {
	Code        int
	Description string
}

func (e *UPnPError) Error() string {
	return fmt.Sprintf("upnp: the gateway refused with error %d %s", e.Code, e.Description)
}

// parseSOAP reads the answer to action: its out-arguments by name, or the *UPnPError of a fault.
func parseSOAP(b []byte, action string) (map[string]string, error) {
	if len(b) > maxUPnPBody {
		return nil, fmt.Errorf("upnp: %s: answer of %d bytes, more than %d", action, len(b), maxUPnPBody)
	}
	var env soapEnvelope
	if err := xml.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("upnp: %s: %w", action, err)
	}
	if f := env.Body.Fault; f != nil {
		code, err := strconv.Atoi(strings.TrimSpace(f.Code))
		if err != nil || code <= 0 || code > upnpMaxErrorCode {
			return nil, fmt.Errorf("upnp: %s: a fault without a valid UPnP error code (%q)", action, f.Code)
		}
		desc := strings.TrimSpace(f.Description)
		if len(desc) > upnpErrDescription {
			desc = desc[:upnpErrDescription]
		}
		return nil, &UPnPError{Code: code, Description: strconv.QuoteToASCII(desc)}
	}
	if len(env.Body.Any) != 1 || env.Body.Any[0].XMLName.Local != action+"Response" {
		return nil, fmt.Errorf("upnp: %s: the answer holds no %sResponse", action, action)
	}
	resp := env.Body.Any[0]
	if len(resp.Args) > maxSOAPArgs {
		return nil, fmt.Errorf("upnp: %s: %d out-arguments, more than %d", action, len(resp.Args), maxSOAPArgs)
	}
	out := make(map[string]string, len(resp.Args))
	for _, a := range resp.Args {
		if _, dup := out[a.XMLName.Local]; dup {
			return nil, fmt.Errorf("upnp: %s: out-argument %q twice", action, a.XMLName.Local)
		}
		out[a.XMLName.Local] = strings.TrimSpace(a.Value)
	}
	return out, nil
}
