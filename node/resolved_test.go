package node

import (
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/warren-net/warren/internal/testkit"
)

// TestRegisterDNS: with systemd-resolved (a fake resolvectl that logs its arguments, and a fake
// runtime directory), the DNS server is registered for ~warren on the device and reverted at the
// end; without it, or from another network namespace, status carries the resolv.conf line and
// nothing runs.
func TestRegisterDNS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TUN mode is Linux only")
	}
	oldNS := inInitialNetNS
	t.Cleanup(func() { inInitialNetNS = oldNS })
	inInitialNetNS = func() bool { return true }
	bin, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\n"
	if err := os.WriteFile(filepath.Join(bin, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	d4, d6 := netip.MustParseAddr("100.127.255.254"), netip.MustParseAddr("fd7a:7761:7272:ffff:ffff:ffff:ffff:ffff")

	old := resolvedDir
	t.Cleanup(func() { resolvedDir = old })
	resolvedDir = filepath.Join(t.TempDir(), "absent")
	n := &Node{log: testkit.Logger(t, "node")}
	n.registerDNS("warren0", d4, d6)
	n.unregisterDNS()
	if _, err := os.Stat(calls); err == nil || !strings.Contains(n.dnsSetup, "nameserver 100.127.255.254") {
		t.Errorf("without resolved: setup %q, resolvectl ran: %v", n.dnsSetup, err == nil)
	}

	resolvedDir = t.TempDir()
	n = &Node{log: testkit.Logger(t, "node")}
	n.registerDNS("warren0", d4, d6)
	if !strings.Contains(n.dnsSetup, "systemd-resolved") {
		t.Errorf("setup %q", n.dnsSetup)
	}
	n.unregisterDNS()
	// In another network namespace: nothing runs, the resolvectl lines are logged.
	inInitialNetNS = func() bool { return false }
	n = &Node{log: testkit.Logger(t, "node")}
	n.registerDNS("warren0", d4, d6)
	if !strings.Contains(n.dnsSetup, "by hand, as root in the host's network namespace: resolvectl dns warren0 100.127.255.254") {
		t.Errorf("in another namespace: setup %q", n.dnsSetup)
	}
	got, _ := os.ReadFile(calls)
	want := "dns warren0 100.127.255.254 fd7a:7761:7272:ffff:ffff:ffff:ffff:ffff\ndomain warren0 ~warren\nrevert warren0\n"
	if string(got) != want {
		t.Errorf("resolvectl calls:\n%s\nwant:\n%s", got, want)
	}
}
