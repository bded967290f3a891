//go:build !windows

package operatorapi

import "syscall"

// errRefused is what connecting to a unix socket nobody listens on fails with.
var errRefused error = syscall.ECONNREFUSED
