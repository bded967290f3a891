package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/identity"
)

// TestListenTCPTaken: when the UDP port's TCP twin is taken by another program, the server runs
// without the fallback (a test's or a host's random UDP port says nothing about TCP); a TCP address
// the operator named must work or fail the start.
func TestListenTCPTaken(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	busy, err := net.Listen("tcp4", udp.LocalAddr().String())
	if err != nil {
		t.Skipf("the UDP port's TCP twin is already taken: %v", err)
	}
	defer busy.Close()
	key, _ := identity.Generate()
	allow := func(netip.Addr) bool { return true }
	pc, err := listenTCP("", udp, key, allow, hclog.NewNullLogger())
	if err != nil || pc != nil {
		t.Errorf("default address taken: %v, %v; want no fallback and no error", pc, err)
	}
	if _, err := listenTCP(busy.Addr().String(), udp, key, allow, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "--listen-tcp") {
		t.Errorf("named address taken: %v, want an error naming --listen-tcp", err)
	}
}
