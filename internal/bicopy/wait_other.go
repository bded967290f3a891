//go:build !unix

package bicopy

import "io"

// readableWaiter returns nil: waiting for a socket without reading is done on Unix only.
func readableWaiter(io.Reader) func() { return nil }
