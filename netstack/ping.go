package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping sends one ICMP echo request to dst through the overlay and waits for the reply, like ping(8).
// It returns the round-trip time. seq numbers the request; the reply must carry the same number.
func (ns *Stack) Ping(ctx context.Context, dst netip.Addr, seq uint16) (time.Duration, error) {
	transProto, netProto := icmp.ProtocolNumber4, tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	echo, reply := byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	if dst.Is6() {
		transProto, netProto = icmp.ProtocolNumber6, ipv6.ProtocolNumber
		echo, reply = byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	}
	if ns.isClosed() {
		return 0, fmt.Errorf("ping %v: %w", dst, errClosedStack)
	}
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("ping: endpoint: %w", tcpErr(terr))
	}
	defer ep.Close()
	to := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.AsSlice())}
	if terr := ep.Connect(to); terr != nil {
		return 0, fmt.Errorf("ping %v: %w", dst, tcpErr(terr))
	}
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	// Type, code, checksum (the stack fills it), identifier (the stack sets it), sequence, payload.
	msg := make([]byte, 8, 8+56)
	msg[0] = echo
	binary.BigEndian.PutUint16(msg[6:], seq)
	msg = append(msg, bytes.Repeat([]byte("warren!!"), 7)...)
	start := time.Now()
	if _, terr := ep.Write(bytes.NewReader(msg), tcpip.WriteOptions{}); terr != nil {
		return 0, fmt.Errorf("ping %v: %w", dst, tcpErr(terr))
	}
	var buf bytes.Buffer
	for {
		buf.Reset()
		_, terr := ep.Read(&buf, tcpip.ReadOptions{})
		if _, wait := terr.(*tcpip.ErrWouldBlock); wait {
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return 0, fmt.Errorf("ping %v: %w", dst, ctx.Err())
			}
		}
		if terr != nil {
			return 0, fmt.Errorf("ping %v: %w", dst, tcpErr(terr))
		}
		b := buf.Bytes()
		if len(b) >= 8 && b[0] == reply && binary.BigEndian.Uint16(b[6:]) == seq {
			return time.Since(start), nil
		}
	}
}
