package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Device is an open TUN device with its reader goroutine. Write is safe for concurrent use.
type Device struct {
	cfg   Config
	log   hclog.Logger
	f     *os.File // the /dev/net/tun descriptor, non-blocking (reads park in the runtime poller)
	rc    syscall.RawConn
	index int  // interface index; 0 for a device of another network namespace (FromFile)
	vnet  bool // packets carry a virtio_net_hdr (offload_linux.go)
	wg    sync.WaitGroup

	segBuf []byte // the reader's buffer for splitting large segments

	closeOnce sync.Once
	closeErr  error

	// ReadErrors counts failed reads from the device other than the one ending it at Close.
	ReadErrors atomic.Uint64
	// Dropped counts packets read that could not be made sense of (an offload the device never
	// turned on, a header cut short); Large the large TCP segments ReceiveLarge took whole.
	Dropped, Large atomic.Uint64
}

// newDevice wraps descriptor f of a TUN device; vnet says whether it was created with
// IFF_VNET_HDR. With cfg.ReceiveLarge it turns on the kernel's offloads.
func newDevice(cfg Config, f *os.File, index int, vnet bool) (*Device, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	d := &Device{cfg: cfg, log: cfg.Logger, f: f, rc: rc, index: index, vnet: vnet}
	if vnet && cfg.ReceiveLarge != nil {
		var oerr error
		if err := rc.Control(func(fd uintptr) { oerr = enableOffload(int(fd)) }); err != nil {
			oerr = err
		}
		if oerr != nil { // old kernels: packets as the MTU makes them
			d.log.Debug("TUN segmentation offload unavailable", "error", oerr)
		}
	}
	return d, nil
}

// Open creates and configures the device and starts its reader goroutine. On error nothing is left
// behind on the host.
func Open(cfg Config) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	d, err := openConfigured(cfg)
	if err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go d.readLoop()
	cfg.Logger.Info("TUN device up", "name", cfg.Name, "addrs", cfg.Addrs, "mtu", cfg.MTU)
	return d, nil
}

// openConfigured creates and configures the device, without its reader. On error nothing is left.
func openConfigured(cfg Config) (*Device, error) {
	log := cfg.Logger
	nl, err := dialNetlink()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", permission(err))
	}
	defer nl.close()

	if err := removeStale(nl, cfg.Name, log); err != nil {
		return nil, err
	}
	f, err := create(cfg.Name)
	if err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(cfg.Name)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun: find new device %q: %w", cfg.Name, err)
	}
	d, err := newDevice(cfg, f, ifi.Index, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := d.configure(nl); err != nil {
		f.Close() // not persistent: the kernel deletes the device with its last descriptor
		nl.delLink(ifi.Index)
		return nil, err
	}
	return d, nil
}

// create opens /dev/net/tun and attaches it to a new (or unused) TUN device of that name.
func create(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: open /dev/net/tun: %w", permission(err))
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: device name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("tun: device %q is in use by another process (another warren node?); choose another name", name)
		}
		return nil, fmt.Errorf("tun: create device %q: %w", name, permission(err))
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// removeStale deletes a TUN device named name that no process holds open. A crashed node's device
// normally disappears with its descriptor; this handles persistent leftovers (and devices someone
// created by hand with `ip tuntap add`). A device in use, or of another kind, is left alone.
func removeStale(nl *netlink, name string, log hclog.Logger) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil // no such device: the usual case
	}
	// Attaching succeeds only if no process has the device open (EBUSY otherwise): proof it is
	// stale. The kernel refuses (EINVAL) when the interface is not a TUN device.
	f, err := create(name)
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("tun: an interface named %q exists and is not a TUN device; choose another name", name)
	}
	if err != nil {
		return err
	}
	f.Close()
	if err := nl.delLink(ifi.Index); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("tun: remove stale device %q: %w", name, permission(err))
	}
	log.Warn("removed a stale TUN device left from an earlier run", "name", name)
	return nil
}

// configure sets the MTU, turns off IPv6 link-local autoconfiguration (the overlay has no use for
// fe80:: addresses, router solicitations or MLD from them), adds the addresses and brings the
// device up; the kernel then adds the connected routes for the addresses' prefixes.
func (d *Device) configure(nl *netlink) error {
	if err := nl.setMTU(d.index, d.cfg.MTU); err != nil {
		return fmt.Errorf("tun: set MTU %d: %w", d.cfg.MTU, permission(err))
	}
	if err := nl.setAddrGenModeNone(d.index); err != nil {
		// Kernels without IPv6, or with it disabled: harmless, the node drops link-local traffic.
		d.log.Debug("cannot disable IPv6 link-local addresses on the device", "error", err)
	}
	for _, a := range d.cfg.Addrs {
		if err := nl.addAddr(d.index, a); err != nil {
			return fmt.Errorf("tun: add address %v: %w", a, permission(err))
		}
	}
	if err := nl.setUp(d.index); err != nil {
		return fmt.Errorf("tun: bring %s up: %w", d.cfg.Name, permission(err))
	}
	if d.cfg.DefaultRoutes {
		for _, a := range d.cfg.Addrs {
			if err := nl.addDefaultRoute(d.index, a.Addr().Is6()); err != nil {
				return fmt.Errorf("tun: default route through %s: %w", d.cfg.Name, permission(err))
			}
		}
	}
	return nil
}

// readLoop hands every packet to Receive (or ReceiveLarge) until Close. One buffer, reused.
func (d *Device) readLoop() {
	defer d.wg.Done()
	buf := make([]byte, maxFrame)
	failures := 0
	for {
		n, err := d.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, unix.EBADFD) {
				d.log.Info("TUN device gone", "name", d.cfg.Name) // its network namespace went away
				return
			}
			d.ReadErrors.Add(1)
			if failures++; failures > 100 {
				d.log.Error("giving up reading the TUN device", "error", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		failures = 0
		switch {
		case d.vnet:
			d.handleFrame(buf[:n])
		case n > 0:
			d.cfg.Receive(buf[:n])
		}
	}
}

// Write sends one IP packet to the kernel, as if it had arrived on the device.
func (d *Device) Write(pkt []byte) (int, error) {
	if d.vnet {
		return d.writeVnet(pkt)
	}
	return d.f.Write(pkt)
}

// Name returns the device's name.
func (d *Device) Name() string { return d.cfg.Name }

// Close stops the reader and deletes the device (and so its addresses and routes). Idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		// Closing the last descriptor of a non-persistent device deletes it; the explicit delete
		// makes sure, and is a no-op (ENODEV) when the kernel was first.
		d.closeErr = d.f.Close()
		d.wg.Wait()
		if d.index == 0 {
			return // another namespace's device: it goes with its last descriptor or its namespace
		}
		if nl, err := dialNetlink(); err == nil {
			if err := nl.delLink(d.index); err != nil && !errors.Is(err, unix.ENODEV) {
				d.closeErr = errors.Join(d.closeErr, fmt.Errorf("tun: delete device: %w", err))
			}
			nl.close()
		}
		d.log.Info("TUN device removed", "name", d.cfg.Name)
	})
	return d.closeErr
}

// permission wraps EPERM and EACCES in ErrPermission.
func permission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}
