// Package peercred tells which local user owns the other end of a loopback connection or the source
// of a loopback datagram, so that a service on 127.0.0.1 can serve its own user and refuse the
// others on a shared machine. On Linux it reads the kernel's socket tables (/proc/net/tcp, tcp6, udp,
// udp6) and SO_PEERCRED for unix sockets; elsewhere it reports ErrUnsupported. It knows nothing
// about proxies or warren.
package peercred

import (
	"errors"
	"fmt"
	"net"
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

// Listener wraps a listener and closes, before they are served, connections from local users that
// policy does not allow (and connections whose owner cannot be found: in doubt, refuse). Refused is
// called for each, if set. Where owners cannot be told (ErrUnsupported), every connection passes.
type Listener struct {
	net.Listener
	Policy  Policy
	Refused func(uid int64, err error) // uid -1 when unknown
}

// Accept returns the next connection from an allowed user.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.Policy.Any {
			return c, err
		}
		uid, err := ConnOwner(c)
		switch {
		case errors.Is(err, ErrUnsupported):
			return c, nil
		case err == nil && l.Policy.Allows(uid):
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
