package netstack

import (
	"errors"
	"io"
	"net"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// tcpConn is a connection of the stack as a net.Conn (gonet's) that can also wait for data without
// consuming it (Peek): bicopy, relaying it, then parks a quiet direction with no read buffer, as it
// does for a host socket or a QUIC stream.
type tcpConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

func newTCPConn(wq *waiter.Queue, ep tcpip.Endpoint) *tcpConn {
	return &tcpConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}
}

// Peek waits until at least one byte has arrived and copies up to len(b) of the bytes there without
// consuming them; io.EOF once the peer has closed its side and every byte was read. It ends with an
// error when the connection is closed or reset, but does not honour read deadlines (Read does).
func (c *tcpConn) Peek(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var notify chan struct{}
	for {
		w := tcpip.SliceWriter(b)
		res, err := c.ep.Read(&w, tcpip.ReadOptions{Peek: true})
		switch err.(type) {
		case nil:
			return res.Count, nil
		case *tcpip.ErrClosedForReceive:
			return 0, io.EOF
		case *tcpip.ErrWouldBlock:
		default:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(),
				Err: errors.New(err.String())}
		}
		if notify == nil { // register, then read again: an event between the read and now is not lost
			var entry waiter.Entry
			entry, notify = waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
			c.wq.EventRegister(&entry)
			defer c.wq.EventUnregister(&entry)
			continue
		}
		<-notify
	}
}
