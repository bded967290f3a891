package localapi

import "net/netip"

// AttachProtocol is the Upgrade token of POST /v1/attach, by which `warren run` hands the node a TUN
// device it created in a network namespace of its own. After the HTTP 101 answer the node sends one
// AttachInfo line (JSON); the client sends one byte carrying the device's descriptor (SCM_RIGHTS);
// the node answers one AttachResult line. The device stays bridged to the overlay until either side
// closes the connection. Only the node's own user and root may attach (the node checks SO_PEERCRED).
const AttachProtocol = "warren-tun"

// AttachInfo tells the client how to configure its device.
type AttachInfo struct {
	Addrs []netip.Prefix `json:"addrs"` // the node's overlay addresses with the overlay prefix lengths
	MTU   int            `json:"mtu"`
	// DNS are the node's DNS server addresses (NAME.warren), for the namespace's resolv.conf.
	DNS []netip.Addr `json:"dns,omitempty"`
}

// AttachResult is the node's answer to the descriptor.
type AttachResult struct {
	Device string `json:"device,omitempty"` // the node's name for the attached device, on success
	Error  string `json:"error,omitempty"`
}
