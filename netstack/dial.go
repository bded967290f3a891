package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Errors that DialContext (and other methods) wrap in a *net.OpError. Each also matches the
// corresponding syscall errno with errors.Is, which is how a proxy in front picks its reply code.
var (
	// ErrConnectionRefused is returned when the remote stack reset the connection attempt (the
	// port is not exposed there, or its local service is not answering).
	ErrConnectionRefused error = &stackError{"connection refused", syscall.ECONNREFUSED}
	// ErrHostUnreachable is returned when no route leads to the destination or an ICMP host
	// unreachable came back.
	ErrHostUnreachable error = &stackError{"host unreachable", syscall.EHOSTUNREACH}
	// ErrNetworkUnreachable is returned when the destination's network is unreachable.
	ErrNetworkUnreachable error = &stackError{"network is unreachable", syscall.ENETUNREACH}
	// ErrTimedOut is returned when the connection attempt timed out inside the stack.
	ErrTimedOut error = &stackError{"connection timed out", syscall.ETIMEDOUT}
	// ErrConnectionReset is returned when the connection was reset.
	ErrConnectionReset error = &stackError{"connection reset by peer", syscall.ECONNRESET}
)

// stackError is an error with a fixed text that also matches a syscall errno.
type stackError struct {
	text  string
	errno syscall.Errno
}

func (e *stackError) Error() string { return e.text }

// Is makes errors.Is(err, syscall.ECONNREFUSED) and friends work.
func (e *stackError) Is(target error) bool {
	errno, ok := target.(syscall.Errno)
	return ok && errno == e.errno
}

// Timeout reports whether the error is a timeout (net.Error).
func (e *stackError) Timeout() bool { return e.errno == syscall.ETIMEDOUT }

// tcpErr converts a gVisor tcpip.Error, which is not a Go error, to one. Known errors become the
// sentinels above; the rest keep gVisor's text.
func tcpErr(err tcpip.Error) error {
	switch err.(type) {
	case nil:
		return nil
	case *tcpip.ErrConnectionRefused:
		return ErrConnectionRefused
	case *tcpip.ErrHostUnreachable, *tcpip.ErrHostDown:
		return ErrHostUnreachable
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		return ErrNetworkUnreachable
	case *tcpip.ErrTimeout:
		return ErrTimedOut
	case *tcpip.ErrConnectionReset, *tcpip.ErrConnectionAborted:
		return ErrConnectionReset
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive:
		return net.ErrClosed
	}
	return errors.New(err.String())
}

// DialContext opens a connection on the overlay. network is "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6"; address is a literal "ip:port" (no names: resolving is the caller's job). Errors are
// *net.OpError values wrapping ErrConnectionRefused (the text contains "connection refused"),
// ErrHostUnreachable ("host unreachable"), ctx.Err() when ctx ends first, and so on. A dial to an
// unresponsive address waits until ctx ends (or gVisor gives up after its SYN retries), so callers
// should pass a deadline.
func (ns *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: overlayAddr(address), Err: err}
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, opErr(fmt.Errorf("address %q: want a literal ip:port", address))
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	switch network {
	case "tcp4", "udp4":
		if !ap.Addr().Is4() {
			return nil, opErr(errors.New("address is not IPv4"))
		}
	case "tcp6", "udp6":
		if !ap.Addr().Is6() {
			return nil, opErr(errors.New("address is not IPv6"))
		}
	case "tcp", "udp":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	if ns.isClosed() {
		return nil, opErr(net.ErrClosed)
	}
	fa := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
	proto := netProto(ap.Addr())
	transport := tcp.ProtocolNumber
	if network[0] == 'u' {
		transport = udp.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(transport, proto, &wq)
	if terr != nil {
		return nil, opErr(tcpErr(terr))
	}
	if transport == udp.ProtocolNumber {
		// A UDP connect only fixes the peer: nothing to wait for.
		if terr := ep.Connect(fa); terr != nil {
			ep.Close()
			return nil, opErr(tcpErr(terr))
		}
		return gonet.NewUDPConn(&wq, ep), nil
	}
	// Connect completes with a writable event, or an error/hang-up event if it fails.
	we, ready := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventErr | waiter.EventHUp)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	terr = ep.Connect(fa)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-ns.ctx.Done():
			ep.Close()
			return nil, opErr(net.ErrClosed)
		case <-ready:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(tcpErr(terr))
	}
	return newTCPConn(&wq, ep), nil
}

func (ns *Stack) isClosed() bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.closed
}

// overlayAddr is an address as the caller gave it, for error messages.
type overlayAddr string

func (a overlayAddr) Network() string { return "overlay" }
func (a overlayAddr) String() string  { return string(a) }
