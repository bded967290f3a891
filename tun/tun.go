// Package tun is a kernel TUN device for the overlay: it creates the device, gives it the node's
// overlay addresses and MTU, brings it up, reads IP packets from it in one goroutine and writes IP
// packets to it. Close removes the device again, and with it its addresses and routes.
//
// What it changes on the host, and nothing else: one point-to-point device (default "warren0"), the
// addresses in Config.Addrs on it (their prefixes become connected routes through the device, and an
// IPv4 prefix's last address its broadcast address), its MTU and up state. No default route (unless
// Config.DefaultRoutes, for a device in a namespace of its own), no other
// interface, no firewall rules, no sysctls. Configuration goes through rtnetlink; nothing is executed.
//
// It knows nothing about peers, filtering or the netstack: the node decides what goes in and out.
// Creating a device needs root or CAP_NET_ADMIN (ErrPermission otherwise). Linux only.
package tun

import (
	"errors"
	"net/netip"

	"github.com/hashicorp/go-hclog"
)

// DefaultName is the device name used when Config.Name is empty.
const DefaultName = "warren0"

// ErrPermission is returned by Open when the process may not create or configure network devices
// (it lacks CAP_NET_ADMIN). It wraps the system's error.
var ErrPermission = errors.New("creating a TUN device needs root or CAP_NET_ADMIN")

// ErrUnsupported is returned by Open on systems without TUN support in this package.
var ErrUnsupported = errors.New("TUN devices are supported on Linux only")

// Config configures a Device.
type Config struct {
	// Name of the device, at most 15 bytes. Default DefaultName. An existing TUN device of that name
	// that no process uses (left behind by a crash, or persistent) is deleted and replaced; one in use
	// by another process, or another kind of interface with that name, is an error.
	Name string
	// Addrs are the node's addresses with the overlay's prefix length (e.g. 100.64.0.7/10,
	// fd7a:...::7/48): the kernel routes exactly those prefixes through the device. Required.
	Addrs []netip.Prefix
	// MTU of the device. Default 1280.
	MTU int
	// DefaultRoutes also routes everything else (0.0.0.0/0 and ::/0, for the families of Addrs)
	// through the device. Only for a device in a network namespace of its own (`warren run`, whose
	// node reaches the internet for it); never on the host.
	DefaultRoutes bool
	// Receive is called with every packet read from the device, from the device's one reader
	// goroutine. pkt is valid only during the call (the buffer is reused). Required.
	Receive func(pkt []byte)
	// ReceiveLarge, if set, turns on the kernel's TCP segmentation offload for the device (Linux):
	// the kernel then hands over TCP in segments of up to 64 KiB instead of the MTU's, and leaves
	// TCP and UDP checksums for the device to complete. Each large segment, its IP length set but
	// its TCP checksum not (a receiver that takes it must trust the kernel's data without checking
	// it, as a stack with receive checksum offload does), goes to ReceiveLarge; if it returns false
	// the device cuts the segment into the MTU's, with full checksums, for Receive. Every other
	// packet goes to Receive, its checksum completed. Called from the reader goroutine, pkt valid
	// only during the call.
	ReceiveLarge func(pkt []byte) bool
	// Logger; nil = silent.
	Logger hclog.Logger
}

func (c *Config) setDefaults() error {
	if len(c.Addrs) == 0 || c.Receive == nil {
		return errors.New("tun: Addrs and Receive are required")
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) > 15 {
		return errors.New("tun: device name longer than 15 bytes")
	}
	if c.MTU == 0 {
		c.MTU = 1280
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return errors.New("tun: MTU out of range")
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return nil
}
