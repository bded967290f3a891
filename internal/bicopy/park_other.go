//go:build unix && !linux

package bicopy

// canPark reports false: parking sockets needs epoll (Linux); elsewhere a quiet socket direction
// keeps its goroutine.
func canPark() bool { return false }

func (*socketSource) park() bool   { return false }
func (*socketSource) cancel() bool { return false }
