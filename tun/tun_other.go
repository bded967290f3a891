//go:build !linux

package tun

// Device is an open TUN device; on this system Open always fails.
type Device struct{}

// Open returns ErrUnsupported on this system.
func Open(cfg Config) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Write is never reached: Open fails.
func (d *Device) Write(pkt []byte) (int, error) { return 0, ErrUnsupported }

// Name returns "".
func (d *Device) Name() string { return "" }

// Close does nothing.
func (d *Device) Close() error { return nil }
