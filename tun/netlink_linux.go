package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// netlink is a minimal rtnetlink client: one request at a time, each acknowledged by the kernel.
type netlink struct {
	fd  int
	seq uint32
	buf []byte
}

func dialNetlink() (*netlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink bind: %w", err)
	}
	// Bound waits for an acknowledgement: the kernel answers at once, so this only guards bugs.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink timeout: %w", err)
	}
	return &netlink{fd: fd, seq: uint32(time.Now().Unix()), buf: make([]byte, 1<<16)}, nil
}

func (nl *netlink) close() { unix.Close(nl.fd) }

// request sends one message (header added here) and waits for its acknowledgement, returning the
// kernel's error, if any, as a unix.Errno.
func (nl *netlink) request(typ, flags uint16, body []byte) error {
	nl.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], nl.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(nl.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("rtnetlink send: %w", err)
	}
	for range 64 { // replies to other (older) requests are skipped; bounded all the same
		n, _, err := unix.Recvfrom(nl.fd, nl.buf, 0)
		if err != nil {
			return fmt.Errorf("rtnetlink receive: %w", err)
		}
		for b := nl.buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return errors.New("rtnetlink: malformed reply")
			}
			typ, seq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
			if seq == nl.seq && typ == unix.NLMSG_ERROR {
				if l < unix.SizeofNlMsghdr+4 {
					return errors.New("rtnetlink: short error reply")
				}
				if errno := -int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); errno != 0 {
					return unix.Errno(errno)
				}
				return nil
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
	return errors.New("rtnetlink: no acknowledgement")
}

// ifinfo is a struct ifinfomsg.
func ifinfo(index int, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// attr appends one rtattr, padded to 4 bytes.
func attr(b []byte, typ uint16, data []byte) []byte {
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func (nl *netlink) setMTU(index, mtu int) error {
	return nl.request(unix.RTM_NEWLINK, 0, attr(ifinfo(index, 0, 0), unix.IFLA_MTU, u32(uint32(mtu))))
}

func (nl *netlink) setUp(index int) error {
	return nl.request(unix.RTM_NEWLINK, 0, ifinfo(index, unix.IFF_UP, unix.IFF_UP))
}

// setAddrGenModeNone stops the kernel from giving the device an fe80:: address.
func (nl *netlink) setAddrGenModeNone(index int) error {
	const in6AddrGenModeNone = 1
	inet6 := attr(nil, unix.IFLA_INET6_ADDR_GEN_MODE, []byte{in6AddrGenModeNone})
	spec := attr(nil, unix.AF_INET6, inet6)
	return nl.request(unix.RTM_NEWLINK, 0, attr(ifinfo(index, 0, 0), unix.IFLA_AF_SPEC, spec))
}

func (nl *netlink) delLink(index int) error {
	return nl.request(unix.RTM_DELLINK, 0, ifinfo(index, 0, 0))
}

// addAddr adds p's address with p's prefix length. An IPv4 address also gets the prefix's last
// address as its broadcast address, so that the kernel routes datagrams sent to it (the overlay's
// broadcast address) out of the device and delivers those arriving on it. IPv6 skips duplicate
// address detection: the coord hands out unique addresses.
func (nl *netlink) addAddr(index int, p netip.Prefix) error {
	ip := p.Addr().Unmap()
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	if ip.Is6() {
		b[0] = unix.AF_INET6
	}
	b[1] = byte(p.Bits())
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	b = attr(b, unix.IFA_LOCAL, ip.AsSlice())
	b = attr(b, unix.IFA_ADDRESS, ip.AsSlice())
	if ip.Is4() {
		b = attr(b, unix.IFA_BROADCAST, lastAddr(netip.PrefixFrom(ip, p.Bits())).AsSlice())
	} else {
		b = attr(b, unix.IFA_FLAGS, u32(unix.IFA_F_NODAD))
	}
	return nl.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b)
}

// lastAddr returns the last address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (uint32(1)<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// addDefaultRoute adds a default route (0.0.0.0/0, or ::/0 if v6) through the device, in the main
// table, like `ip route add default dev DEV`: no gateway, the device is point-to-point.
func (nl *netlink) addDefaultRoute(index int, v6 bool) error {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	if v6 {
		b[0] = unix.AF_INET6
	}
	// dst_len, src_len, tos: 0.
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_LINK
	b[7] = unix.RTN_UNICAST
	b = attr(b, unix.RTA_OIF, u32(uint32(index)))
	return nl.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b)
}
