package operatorapi

import "syscall"

// errRefused is what connecting to a unix socket nobody listens on fails with: WSAECONNREFUSED (package
// syscall's ECONNREFUSED is an invented errno on Windows, never returned by a socket).
var errRefused error = syscall.Errno(10061)
