package tun

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Create creates and configures a device exactly as Open does, brings the loopback interface up too,
// and returns the device's descriptor instead of reading it: for a process that sets up a device in a
// network namespace of its own and hands it to a node (`warren run`). Config.Receive is not used.
// The device lives as long as a descriptor of it is open (or its namespace).
func Create(cfg Config) (*os.File, error) {
	if cfg.Receive == nil {
		cfg.Receive = func([]byte) {}
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	d, err := openConfigured(cfg)
	if err != nil {
		return nil, err
	}
	if lo, err := net.InterfaceByName("lo"); err == nil {
		nl, err := dialNetlink()
		if err == nil {
			err = nl.setUp(lo.Index)
			nl.close()
		}
		if err != nil {
			d.f.Close()
			return nil, fmt.Errorf("tun: bring lo up: %w", permission(err))
		}
	}
	return d.f, nil
}

// FromFile wraps the descriptor of a device that another process created (with Create, usually in
// another network namespace) and starts its reader; it takes ownership of f. The device is not
// configured here, and Close only closes the descriptor: the device belongs to its namespace. Name
// is only used in logs.
func FromFile(f *os.File, cfg Config) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		f.Close()
		return nil, err
	}
	// The runtime poller needs a non-blocking descriptor; os.NewFile registers it as such.
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %w", err)
	}
	vnet := hasVnetHdr(fd)
	f = os.NewFile(uintptr(fd), "/dev/net/tun")
	d, err := newDevice(cfg, f, 0, vnet)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.wg.Add(1)
	go d.readLoop()
	return d, nil
}
