package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/warren-net/warren/identity"
)

// defaultCoordPort is the UDP port warren-coord listens on unless told otherwise; --coord HOST means
// HOST:7400.
const defaultCoordPort = "7400"

// withDefaultPort adds defaultCoordPort to an address without a port: "host", "[::1]" and a bare IPv6
// literal "::1" all get one; "host:port" and "[::1]:port" are returned as they are.
func withDefaultPort(addr string) string {
	if addr == "" {
		return addr
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		return addr + ":" + defaultCoordPort
	}
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() {
		return net.JoinHostPort(addr, defaultCoordPort)
	}
	if strings.Contains(addr, ":") {
		return addr // malformed; let the dialer say why
	}
	return net.JoinHostPort(addr, defaultCoordPort)
}

// coordTarget reads --coord, which may carry the coord's key ("HOST:PORT#SHA256:…"), together with
// --coord-key: the addresses to dial and the fingerprint to pin ("" = the saved pin, or trust on
// first use). Two different keys are an error, not a choice. An address without a port gets the
// default one, 7400.
//
// --coord may name several servers that share one database and one key, comma-separated, in the
// order the node tries them ("a:7400,b:7400#SHA256:…"; a key may follow any of them, and all
// that are given must agree). The result joins them with commas again.
func coordTarget(coord, coordKey string) (addr, key string, err error) {
	var addrs []string
	for _, part := range strings.Split(coord, ",") {
		a, k, err := identity.SplitPinnedAddr(strings.TrimSpace(part))
		if err != nil {
			return "", "", fmt.Errorf("--coord: %w", err)
		}
		if a == "" {
			return "", "", fmt.Errorf("--coord %q: an empty address", coord)
		}
		if k != "" && key != "" && k != key {
			return "", "", fmt.Errorf("--coord names two keys, %s and %s: servers a node fails over between share one key", key, k)
		}
		if k != "" {
			key = k
		}
		addrs = append(addrs, withDefaultPort(a))
	}
	addr = strings.Join(addrs, ",")
	if coordKey == "" {
		return addr, key, nil
	}
	flagKey, err := identity.ParseFingerprint(coordKey)
	if err != nil {
		return "", "", fmt.Errorf("--coord-key: %w", err)
	}
	if key != "" && key != flagKey {
		return "", "", fmt.Errorf("--coord names key %s but --coord-key says %s", key, flagKey)
	}
	return addr, flagKey, nil
}
