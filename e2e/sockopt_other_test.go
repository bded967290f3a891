//go:build !windows

package e2e

import "syscall"

// setsockoptInt sets an integer socket option on a raw socket descriptor.
func setsockoptInt(fd uintptr, level, opt, value int) error {
	return syscall.SetsockoptInt(int(fd), level, opt, value)
}
