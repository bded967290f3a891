//go:build !linux

package tun

import "os"

// Create returns ErrUnsupported on this system.
func Create(cfg Config) (*os.File, error) { return nil, ErrUnsupported }

// FromFile closes f and returns ErrUnsupported on this system.
func FromFile(f *os.File, cfg Config) (*Device, error) {
	f.Close()
	return nil, ErrUnsupported
}
