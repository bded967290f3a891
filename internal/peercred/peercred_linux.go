package peercred

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ConnOwner returns the uid of the process that owns the other end of c, an accepted connection on
// a TCP or unix listener of this host.
func ConnOwner(c net.Conn) (uint32, error) {
	switch c := c.(type) {
	case *net.UnixConn:
		raw, err := c.SyscallConn()
		if err != nil {
			return 0, err
		}
		var cred *syscall.Ucred
		var serr error
		if err := raw.Control(func(fd uintptr) {
			cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		}); err != nil {
			return 0, err
		}
		if serr != nil {
			return 0, fmt.Errorf("peercred: SO_PEERCRED: %w", serr)
		}
		return cred.Uid, nil
	case *net.TCPConn:
		client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		server := c.LocalAddr().(*net.TCPAddr).AddrPort()
		return TCPOwner(client, server)
	}
	return 0, fmt.Errorf("%w: %T", ErrUnsupported, c)
}

// TCP states (as /proc writes them) in which a client's socket still belongs to its process: ESTABLISHED, FIN_WAIT1,
// FIN_WAIT2. (A socket in TIME_WAIT is listed with uid 0: it must never count.)
var liveTCP = map[string]bool{"01": true, "04": true, "05": true}

// TCPOwner returns the uid owning the local TCP socket bound to local and connected to remote. It
// asks the kernel for that one socket over netlink (sock_diag), at a cost independent of how many
// sockets the host has; where netlink is unavailable it scans /proc/net/tcp and tcp6.
func TCPOwner(local, remote netip.AddrPort) (uint32, error) {
	uid, err := diagTCPOwner(local, remote)
	if errors.Is(err, errDiagUnavailable) {
		return procTCPOwner(local, remote)
	}
	return uid, err
}

// procTCPOwner is TCPOwner by reading /proc: every socket of the host, per lookup.
func procTCPOwner(local, remote netip.AddrPort) (uint32, error) {
	return scanTables([]string{"/proc/net/tcp", "/proc/net/tcp6"}, func(loc, rem netip.AddrPort, state string) bool {
		return liveTCP[state] && sameAddrPort(loc, local) && sameAddrPort(rem, remote)
	})
}

// UDPOwner returns the uid owning the local UDP socket that datagrams from src were sent from: one
// bound to src, or to its port on the unspecified address.
func UDPOwner(src netip.AddrPort) (uint32, error) {
	return scanTables([]string{"/proc/net/udp", "/proc/net/udp6"}, func(loc, _ netip.AddrPort, _ string) bool {
		return loc.Port() == src.Port() && (sameAddr(loc.Addr(), src.Addr()) || loc.Addr().IsUnspecified())
	})
}

// scanAttempts: the kernel writes a socket table in chunks, one read at a time, and a socket can be
// skipped when others close between two reads; a miss is read again before it counts.
const scanAttempts = 3

// scanTables returns the uid of the first row of files that match accepts.
func scanTables(files []string, match func(local, remote netip.AddrPort, state string) bool) (uint32, error) {
	for range scanAttempts {
		for _, file := range files {
			uid, err := scan(file, match)
			if err != ErrNotFound {
				return uid, err
			}
		}
	}
	return 0, ErrNotFound
}

// maxLine bounds one line of a socket table (they are about 150 bytes).
const maxLine = 512

// scan reads a /proc/net socket table and returns the uid of the first row match accepts.
func scan(file string, match func(local, remote netip.AddrPort, state string) bool) (uint32, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("peercred: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, maxLine), maxLine)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		loc, err1 := parseHexAddrPort(fields[1])
		rem, err2 := parseHexAddrPort(fields[2])
		if err1 != nil || err2 != nil || !match(loc, rem, fields[3]) {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("peercred: %s: bad uid %q", file, fields[7])
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("peercred: read %s: %w", file, err)
	}
	return 0, ErrNotFound
}

// parseHexAddrPort reads the kernel's "0100007F:1F90" (IPv4) or 32-hex-digit IPv6 form: the address
// as 32-bit words in host byte order, the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	var b [16]byte
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	if len(raw) == 4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(port)), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(port)), nil
}

func sameAddr(a, b netip.Addr) bool { return a.Unmap() == b.Unmap().WithZone("") }

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && sameAddr(a.Addr(), b.Addr())
}
