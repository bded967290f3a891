package main

import (
	"fmt"

	"github.com/warren-net/warren/identity"
)

// coordTarget reads --coord, which may carry the coord's key ("HOST:PORT#SHA256:…"), together with
// --coord-key: the address to dial and the fingerprint to pin ("" = the saved pin, or trust on first
// use). Two different keys are an error, not a choice.
func coordTarget(coord, coordKey string) (addr, key string, err error) {
	addr, key, err = identity.SplitPinnedAddr(coord)
	if err != nil {
		return "", "", fmt.Errorf("--coord: %w", err)
	}
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
