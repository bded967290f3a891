// Package peercred tells which local user owns the other end of a loopback connection or the source
// of a loopback datagram, so that a service on 127.0.0.1 can serve its own user and refuse the
// others on a shared machine. On Linux it asks the kernel for the one TCP socket over netlink
// (sock_diag), reads the socket tables /proc/net/udp and udp6 for UDP (and tcp, tcp6 where netlink
// is unavailable), and SO_PEERCRED for unix sockets; elsewhere it reports ErrUnsupported. It knows nothing
// about proxies or warren.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported is returned where the system cannot tell who owns a socket.
var ErrUnsupported = errors.New("peercred: cannot tell socket owners on this system")

// ErrNotFound is returned when no live socket matches (the client is gone, or it is not local).
var ErrNotFound = errors.New("peercred: no local socket matches")

// Policy says which local users may use a service. The zero Policy allows nobody.
type Policy struct {
	Any  bool     // every local user (the flag's "all")
	UIDs []uint32 // these users
}

// OwnerPolicy allows the given user (the service's own) and root, who can read that user's files
// anyway.
func OwnerPolicy(uid uint32) Policy { return Policy{UIDs: []uint32{uid, 0}} }

// ParsePolicy reads a comma-separated list of user names or numeric uids, or "all", and adds it to
// base.
func ParsePolicy(base Policy, list string) (Policy, error) {
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case f == "all":
			base.Any = true
		default:
			if n, err := strconv.ParseUint(f, 10, 32); err == nil {
				base.UIDs = append(base.UIDs, uint32(n))
				continue
			}
			u, err := user.Lookup(f)
			if err != nil {
				return base, fmt.Errorf("user %q: %w", f, err)
			}
			n, err := strconv.ParseUint(u.Uid, 10, 32)
			if err != nil {
				return base, fmt.Errorf("user %q has uid %q: %w", f, u.Uid, err)
			}
			base.UIDs = append(base.UIDs, uint32(n))
		}
	}
	return base, nil
}

// Allows reports whether uid may use the service.
func (p Policy) Allows(uid uint32) bool { return p.Any || slices.Contains(p.UIDs, uid) }

// permit decides for a client at remote whose socket lookup gave uid and err: a local user is served
// if the policy allows it; a client no local socket matches is another host unless its address is
// loopback (then it is gone, or hidden: in doubt, refuse); where owners cannot be told, all pass.
func (p Policy) permit(uid uint32, err error, remote netip.Addr) bool {
	switch {
	case p.Any || errors.Is(err, ErrUnsupported):
		return true
	case errors.Is(err, ErrNotFound):
		return !remote.Unmap().IsLoopback()
	case err != nil:
		return false
	}
	return p.Allows(uid)
}

// AllowsDatagram reports whether a datagram from from may be served: its sending socket belongs to
// an allowed local user, or it came from another host.
func (p Policy) AllowsDatagram(from netip.AddrPort) bool {
	if p.Any {
		return true
	}
	uid, err := UDPOwner(from)
	return p.permit(uid, err, from.Addr())
}

// Listener wraps a listener and closes, before they are served, connections from local users that
// the policy does not allow, and loopback connections whose owner cannot be found (in doubt,
// refuse). Connections from other hosts pass: a service that listens beyond loopback needs its own
// authentication. Refused, if set, is called for each refusal (uid -1 when unknown).
type Listener struct {
	net.Listener
	Policy  Policy
	Refused func(uid int64, err error)
}

// Accept returns the next connection the policy permits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.Policy.Any {
			return c, err
		}
		uid, err := ConnOwner(c)
		var remote netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			remote = ta.AddrPort().Addr()
		} else {
			remote = netip.IPv6Loopback() // a unix socket is local by definition
		}
		if l.Policy.permit(uid, err, remote) {
			return c, nil
		}
		c.Close()
		if l.Refused != nil {
			if err != nil {
				l.Refused(-1, err)
			} else {
				l.Refused(int64(uid), nil)
			}
		}
	}
}
