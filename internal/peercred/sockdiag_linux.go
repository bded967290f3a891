package peercred

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// The kernel's sock_diag interface (linux/sock_diag.h, linux/inet_diag.h). The standard syscall
// package has the netlink basics but not these; internal packages use only the standard library.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	nlmsgHdrLen      = 16 // struct nlmsghdr
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	// maxDiagReply bounds one answer: an exact lookup returns one inet_diag_msg (plus attributes we
	// did not ask for, so none) or an error message.
	maxDiagReply = 1024
)

// errDiagUnavailable marks a failure of the netlink interface itself (no sock_diag in this kernel
// or sandbox, a refused socket): the caller falls back to /proc.
var errDiagUnavailable = errors.New("peercred: sock_diag unavailable")

// diagTCPOwner asks the kernel for the one TCP socket bound to local and connected to remote, an
// exact 4-tuple lookup in its socket hash (O(1), where /proc/net/tcp lists every socket), and
// returns its uid. ErrNotFound if there is none or it is no longer live (TIME_WAIT, closing);
// errDiagUnavailable-wrapped errors if netlink itself failed.
func diagTCPOwner(local, remote netip.AddrPort) (uint32, error) {
	la, ra := local.Addr().Unmap(), remote.Addr().Unmap()
	family := byte(syscall.AF_INET6)
	if la.Is4() && ra.Is4() {
		family = syscall.AF_INET
	} else {
		la, ra = local.Addr().WithZone(""), remote.Addr().WithZone("")
		if la.Is4() {
			la = netip.AddrFrom16(la.As16())
		}
		if ra.Is4() {
			ra = netip.AddrFrom16(ra.As16())
		}
	}

	var req [nlmsgHdrLen + inetDiagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence number: one request per socket
	r := req[nlmsgHdrLen:]
	r[0] = family
	r[1] = syscall.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0)) // all states; the answer's state is checked below
	putSockID(r[8:], la, local.Port(), ra, remote.Port())

	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return 0, fmt.Errorf("%w: socket: %w", errDiagUnavailable, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, req[:], 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("%w: send: %w", errDiagUnavailable, err)
	}
	var buf [maxDiagReply]byte
	n, _, err := syscall.Recvfrom(fd, buf[:], 0)
	if err != nil {
		return 0, fmt.Errorf("%w: receive: %w", errDiagUnavailable, err)
	}
	return parseDiagReply(buf[:n], la, local.Port(), ra, remote.Port())
}

// putSockID writes a struct inet_diag_sockid: ports and addresses in network byte order, no
// interface, no cookie (INET_DIAG_NOCOOKIE).
func putSockID(b []byte, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	copy(b[4:20], src.AsSlice())
	copy(b[20:36], dst.AsSlice())
	binary.NativeEndian.PutUint32(b[36:], 0)
	binary.NativeEndian.PutUint32(b[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(b[44:], ^uint32(0))
}

// parseDiagReply reads the kernel's answer to one exact lookup: an inet_diag_msg for the socket, or
// an NLMSG_ERROR (ENOENT: no such socket). The socket must be the one asked for (the kernel's
// lookup falls back to a listener on the port) and live; then its uid is returned.
func parseDiagReply(b []byte, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) (uint32, error) {
	ne := binary.NativeEndian
	if len(b) < nlmsgHdrLen {
		return 0, fmt.Errorf("%w: short reply (%d bytes)", errDiagUnavailable, len(b))
	}
	size, typ := ne.Uint32(b[0:]), ne.Uint16(b[4:])
	if size < nlmsgHdrLen || int(size) > len(b) {
		return 0, fmt.Errorf("%w: bad reply length %d of %d", errDiagUnavailable, size, len(b))
	}
	body := b[nlmsgHdrLen:size]
	switch typ {
	case syscall.NLMSG_ERROR:
		if len(body) < 4 {
			return 0, fmt.Errorf("%w: short error reply", errDiagUnavailable)
		}
		errno := syscall.Errno(-int32(ne.Uint32(body)))
		if errno == syscall.ENOENT {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("%w: %w", errDiagUnavailable, errno)
	case sockDiagByFamily:
	default:
		return 0, fmt.Errorf("%w: unexpected reply type %d", errDiagUnavailable, typ)
	}
	if len(body) < inetDiagMsgLen {
		return 0, fmt.Errorf("%w: short inet_diag_msg (%d bytes)", errDiagUnavailable, len(body))
	}
	gotFamily, state, id := body[0], body[1], body[4:52]
	gotSrc, gotDst := sockIDAddr(gotFamily, id[4:20]), sockIDAddr(gotFamily, id[20:36])
	be := binary.BigEndian
	if !liveTCPState[state] || be.Uint16(id[0:]) != sport || be.Uint16(id[2:]) != dport ||
		gotSrc != src.Unmap() || gotDst != dst.Unmap() {
		return 0, ErrNotFound
	}
	return ne.Uint32(body[64:]), nil
}

// sockIDAddr reads an address of an inet_diag_sockid (b is its 16 bytes), unmapped: an IPv6 socket
// connected over IPv4 reports ::ffff:a.b.c.d.
func sockIDAddr(family byte, b []byte) netip.Addr {
	if family == syscall.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b)).Unmap()
}

// liveTCPState: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, the states in which a client's socket still
// belongs to its process (see liveTCP).
var liveTCPState = map[byte]bool{1: true, 4: true, 5: true}
