package tun

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a new, empty network namespace, so the test changes
// nothing on the host. The thread is discarded afterwards (it stays locked when the goroutine ends).
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a TUN device")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f()
	}()
	<-done
}

var (
	testAddr4 = netip.MustParsePrefix("100.64.0.7/10")
	testAddr6 = netip.MustParsePrefix("fd7a:115c:a1e0::7/48")
)

// routes returns this thread's namespace's routing table lines (IPv4 and IPv6) that name dev.
func routes(dev string) []string {
	var out []string
	for _, f := range []string{"/proc/thread-self/net/route", "/proc/thread-self/net/ipv6_route"} {
		b, _ := os.ReadFile(f)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, dev) {
				out = append(out, l)
			}
		}
	}
	return out
}

func TestOpenConfiguresAndCloseRemoves(t *testing.T) {
	inNewNetns(t, func() {
		got := make(chan []byte, 16)
		d, err := Open(Config{Name: "wtest0", Addrs: []netip.Prefix{testAddr4, testAddr6},
			Receive: func(pkt []byte) {
				select {
				case got <- append([]byte(nil), pkt...):
				default:
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		ifi, err := net.InterfaceByName("wtest0")
		if err != nil {
			t.Fatal(err)
		}
		if ifi.MTU != 1280 || ifi.Flags&net.FlagUp == 0 {
			t.Errorf("device: mtu %d flags %v", ifi.MTU, ifi.Flags)
		}
		as, _ := ifi.Addrs()
		var have []string
		for _, a := range as {
			have = append(have, a.String())
		}
		if strings.Join(have, " ") != "100.64.0.7/10 fd7a:115c:a1e0::7/48" {
			t.Errorf("addresses %v (want exactly the two overlay addresses, no link-local)", have)
		}
		rs := routes("wtest0")
		if !strings.Contains(strings.Join(rs, "\n"), "00004064") { // 100.64.0.0 in /proc/net/route (little endian)
			t.Errorf("no route for 100.64.0.0/10 through the device:\n%s", strings.Join(rs, "\n"))
		}

		// A datagram this namespace sends to another overlay address comes out of the device.
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(100, 64, 0, 9), Port: 9999})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		c.Close()
		if !waitFor(got, func(p []byte) bool {
			return len(p) >= 28 && p[9] == 17 && netip.AddrFrom4([4]byte(p[16:20])) == netip.MustParseAddr("100.64.0.9") && string(p[28:]) == "hello"
		}) {
			t.Error("datagram never read from the device")
		}

		// A datagram written to the device reaches a socket on the device's address.
		ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(100, 64, 0, 7), Port: 7001})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if _, err := d.Write(udp4Packet(netip.MustParseAddr("100.64.0.9"), netip.MustParseAddr("100.64.0.7"), 5000, 7001, "in")); err != nil {
			t.Fatal(err)
		}
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := ln.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "in" || from.String() != "100.64.0.9:5000" {
			t.Errorf("read %q from %v: %v", buf[:n], from, err)
		}

		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		d.Close() // idempotent
		if _, err := net.InterfaceByName("wtest0"); err == nil {
			t.Error("device still there after Close")
		}
		if rs := routes("wtest0"); len(rs) != 0 {
			t.Errorf("routes left: %v", rs)
		}
	})
}

func TestStaleDeviceReplaced(t *testing.T) {
	inNewNetns(t, func() {
		// A persistent device as a crash (or `ip tuntap add`) leaves it.
		f, err := create("wtest1")
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETPERSIST, 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := net.InterfaceByName("wtest1"); err != nil {
			t.Fatal("persistent device gone:", err)
		}
		d, err := Open(Config{Name: "wtest1", Addrs: []netip.Prefix{testAddr4}, Receive: func([]byte) {}})
		if err != nil {
			t.Fatal("stale device not replaced:", err)
		}
		// One in use is refused, not stolen.
		if _, err := Open(Config{Name: "wtest1", Addrs: []netip.Prefix{testAddr4}, Receive: func([]byte) {}}); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second Open: %v", err)
		}
		d.Close()
		if _, err := net.InterfaceByName("wtest1"); err == nil {
			t.Error("device still there after Close")
		}
		// Another kind of interface of that name is left alone.
		if _, err := Open(Config{Name: "lo", Addrs: []netip.Prefix{testAddr4}, Receive: func([]byte) {}}); err == nil || !strings.Contains(err.Error(), "not a TUN device") {
			t.Errorf("Open(lo): %v", err)
		}
	})
}

func TestPermissionError(t *testing.T) {
	err := permission(unix.EPERM)
	if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
		t.Errorf("permission(EPERM) = %v", err)
	}
	if errors.Is(permission(unix.ENODEV), ErrPermission) {
		t.Error("ENODEV taken for a permission error")
	}
	if _, err := Open(Config{Name: "this-name-is-too-long", Addrs: []netip.Prefix{testAddr4}, Receive: func([]byte) {}}); err == nil {
		t.Error("long name accepted")
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"100.64.0.7/10": "100.127.255.255", "10.1.2.3/24": "10.1.2.255", "1.2.3.4/32": "1.2.3.4"} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %v, want %s", in, got, want)
		}
	}
}

func waitFor(ch chan []byte, match func([]byte) bool) bool {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p := <-ch:
			if match(p) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// udp4Packet builds an IPv4/UDP packet (UDP checksum 0: none).
func udp4Packet(src, dst netip.Addr, sport, dport uint16, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// TestDefaultRoutes: with DefaultRoutes a datagram to any address leaves through the device, from
// the device's address; without, the namespace has no route there.
func TestDefaultRoutes(t *testing.T) {
	inNewNetns(t, func() {
		dst := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}
		d, err := Open(Config{Name: "wtest1", Addrs: []netip.Prefix{testAddr4, testAddr6}, Receive: func([]byte) {}})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := net.DialUDP("udp4", nil, dst); err == nil {
			c.Close()
			t.Error("a route to 192.0.2.1 without DefaultRoutes")
		}
		d.Close()

		got := make(chan []byte, 16)
		d, err = Open(Config{Name: "wtest1", Addrs: []netip.Prefix{testAddr4, testAddr6}, DefaultRoutes: true,
			Receive: func(pkt []byte) {
				select {
				case got <- append([]byte(nil), pkt...):
				default:
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for _, dst := range []*net.UDPAddr{dst, {IP: net.ParseIP("2001:db8::1"), Port: 53}} {
			c, err := net.DialUDP("udp", nil, dst)
			if err != nil {
				t.Fatalf("dial %v with DefaultRoutes: %v", dst, err)
			}
			c.Write([]byte("out"))
			c.Close()
			want4, want6 := testAddr4.Addr(), testAddr6.Addr()
			if !waitFor(got, func(p []byte) bool {
				if p[0]>>4 == 4 {
					return len(p) >= 20 && netip.AddrFrom4([4]byte(p[12:16])) == want4 && net.IP(p[16:20]).Equal(dst.IP)
				}
				return len(p) >= 40 && netip.AddrFrom16([16]byte(p[8:24])) == want6 && net.IP(p[24:40]).Equal(dst.IP)
			}) {
				t.Errorf("datagram to %v never read from the device (from its address)", dst)
			}
		}
	})
}
