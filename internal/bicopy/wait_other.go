//go:build !unix

package bicopy

import "io"

// socketSource is the Unix way of reading a socket without holding a buffer; elsewhere there is
// none (newSocketSource returns nil) and these methods are never called.
type socketSource struct{ d *direction }

func newSocketSource(io.Reader) *socketSource              { return nil }
func (*socketSource) read() (*[smallSize]byte, int, error) { return nil, 0, io.EOF }
func (*socketSource) Read([]byte) (int, error)             { return 0, io.EOF }
func (*socketSource) park() bool                           { return false }
func (*socketSource) cancel() bool                         { return false }
func isQuiet(error) bool                                   { return false }
