package loadtest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// processStats finds the process that holds the UDP socket bound to ap on this machine (a coord
// on loopback or on one of this host's addresses) and reads its memory and CPU time from /proc.
func processStats(ap netip.AddrPort) (ServerStats, bool) {
	if !isLocal(ap.Addr()) {
		return ServerStats{}, false
	}
	inode := udpInode(ap)
	if inode == "" {
		return ServerStats{}, false
	}
	pid := socketOwner(inode)
	if pid == 0 {
		return ServerStats{}, false
	}
	st := ServerStats{PID: pid}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			switch k {
			case "VmRSS":
				st.RSSMiB = round(kb / 1024)
			case "VmHWM":
				st.PeakRSSMiB = round(kb / 1024)
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command (which may hold spaces) start at ") "; utime and stime are the
		// 14th and 15th fields, in clock ticks of 1/100 s (USER_HZ on every Linux ABI).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				stt, _ := strconv.ParseFloat(f[12], 64)
				st.CPUSeconds = round((ut + stt) / 100)
			}
		}
	}
	return st, true
}

// isLocal reports whether a is an address of this host.
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// udpInode returns the inode of the UDP socket bound to ap (or to the wildcard address on its port).
func udpInode(ap netip.AddrPort) string {
	port := fmt.Sprintf(":%04X ", ap.Port())
	for _, table := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1]+" ", port) && f[2] == strings.Repeat("0", len(f[2])-5)+":0000" {
				return f[9]
			}
		}
	}
	return ""
}

// socketOwner returns the process that has the socket with inode open, 0 if none is visible.
func socketOwner(inode string) int {
	want := "socket:[" + inode + "]"
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && l == want {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid
		}
	}
	return 0
}
