//go:build !linux

package e2e

import "errors"

// enterNS fails: network namespaces exist on Linux only (the tests that use them skip elsewhere).
func enterNS(ns string, f func()) error {
	return errors.New("network namespaces are Linux only")
}
