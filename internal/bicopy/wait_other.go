//go:build !unix

package bicopy

import "io"

// socketReader returns nil: reading a socket without holding a buffer is done on Unix only.
func socketReader(io.Reader) func() (*[smallSize]byte, int, error) { return nil }
