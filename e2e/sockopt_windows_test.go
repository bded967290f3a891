package e2e

import "syscall"

// setsockoptInt sets an integer socket option on a raw socket handle.
func setsockoptInt(fd uintptr, level, opt, value int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), level, opt, value)
}
