package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Telling the host's resolver about the node's DNS server (TUN mode). Where systemd-resolved runs,
// the node registers the DNS addresses for the routing-only domain ~warren on its device with
// resolvectl, so NAME.warren goes there and every other lookup goes where it went before; `resolvectl
// revert DEV` undoes it at exit (and resolved forgets a link's settings when the device goes away,
// should the node die). Only from the initial network namespace: a node in another namespace would
// configure the host's resolver for a device it cannot see. Elsewhere the node logs the one line a
// user adds, and `warren status` shows it.

// resolvectlTimeout bounds each resolvectl run.
const resolvectlTimeout = 5 * time.Second

// resolvedDir exists where systemd-resolved runs (a variable for tests).
var resolvedDir = "/run/systemd/resolve"

// haveResolved reports whether systemd-resolved runs here and resolvectl is installed.
func haveResolved() bool {
	if _, err := exec.LookPath("resolvectl"); err != nil {
		return false
	}
	fi, err := os.Stat(resolvedDir)
	return err == nil && fi.IsDir()
}

// inInitialNetNS reports whether this process shares pid 1's network namespace; false if that cannot
// be read (a process with only CAP_NET_ADMIN may not look at pid 1). resolvectl names the device by
// its index in the caller's namespace, so from another one it would configure some other link of
// the host. A variable for tests.
var inInitialNetNS = func() bool {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	return err1 == nil && err2 == nil && self == init
}

// resolvConfLine is what a user adds to /etc/resolv.conf when nothing registers the server.
func resolvConfLine(d4 netip.Addr) string {
	return fmt.Sprintf("nameserver %s (as the first nameserver line of /etc/resolv.conf; other names are refused there, so lookups move on to the next server)", d4)
}

// registerDNS makes the host's resolver send NAME.warren to d4 and d6 on device dev, or says how.
func (n *Node) registerDNS(dev string, d4, d6 netip.Addr) {
	setup := ""
	byHand := fmt.Sprintf("resolvectl dns %s %s %s; resolvectl domain %s '~warren'", dev, d4, d6, dev)
	resolved := haveResolved()
	if resolved && inInitialNetNS() {
		err := resolvectl("dns", dev, d4.String(), d6.String())
		if err == nil {
			err = resolvectl("domain", dev, "~warren")
		}
		if err == nil {
			setup = "registered with systemd-resolved for ~warren on " + dev
			n.log.Info("names: NAME.warren resolves through this node (systemd-resolved, domain ~warren on the TUN device)", "device", dev, "dns", d4)
			n.mu.Lock()
			n.dnsSetup, n.dnsRegistered = setup, dev
			n.mu.Unlock()
			return
		}
		resolvectl("revert", dev)
		n.log.Warn("names: could not register the DNS server with systemd-resolved", "error", err, "by hand", byHand)
		setup = "by hand: " + byHand
	} else if resolved {
		setup = "by hand, as root in the host's network namespace: " + byHand
		n.log.Info("names: NAME.warren resolves at this node's DNS address; not registered with systemd-resolved (not sure this is the host's network namespace)",
			"dns", d4, "by hand", byHand)
	} else {
		setup = "add: " + resolvConfLine(d4)
		n.log.Info("names: NAME.warren resolves at this node's DNS address; this host's resolver does not ask it yet",
			"dns", d4, "add", resolvConfLine(d4))
	}
	n.mu.Lock()
	n.dnsSetup = setup
	n.mu.Unlock()
}

// unregisterDNS undoes registerDNS (before the device goes).
func (n *Node) unregisterDNS() {
	n.mu.Lock()
	dev := n.dnsRegistered
	n.dnsRegistered = ""
	n.mu.Unlock()
	if dev == "" {
		return
	}
	if err := resolvectl("revert", dev); err != nil {
		n.log.Warn("names: resolvectl revert", "device", dev, "error", err)
	}
}

// resolvectl runs resolvectl with args.
func resolvectl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), resolvectlTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "resolvectl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
