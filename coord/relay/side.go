package relay

import (
	"context"
	"net"
	"net/netip"

	"github.com/warren-net/warren/control"
)

// PacketTransport is the part of a quic.Transport the side channel uses: the non-QUIC packets on its
// socket, and writes beside QUIC's.
type PacketTransport interface {
	ReadNonQUICPacket(ctx context.Context, b []byte) (int, net.Addr, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
}

// SideConfig configures Serve.
type SideConfig struct {
	// Transport carries the packets. Required.
	Transport PacketTransport
	// Table routes relay frames; nil = relay frames are dropped (binding requests are still answered).
	Table *Table
	// Blocked, if set, reports source addresses whose packets are dropped unread.
	Blocked func(netip.Addr) bool
	// Tap, if set, sees every relayed payload (tests use it to show the relay carries only ciphertext).
	// It must not retain or modify b.
	Tap func(b []byte)
}

// Serve answers binding requests (NAT discovery: the reply says which address the request came from,
// in no more bytes than the request) and forwards relay frames through cfg.Table until ctx ends or the
// transport closes. It allocates nothing per packet.
func Serve(ctx context.Context, cfg SideConfig) {
	buf := make([]byte, 2048)
	out := make([]byte, 0, 2048)
	for {
		n, addr, err := cfg.Transport.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			return
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok || n == 0 {
			continue
		}
		from := unmap(ua.AddrPort())
		b := buf[:n]
		if cfg.Blocked != nil && cfg.Blocked(from.Addr()) {
			if b[0] == control.KindRelayTo && cfg.Table != nil {
				cfg.Table.stats.drop(DropBlocked)
			}
			continue
		}
		switch b[0] {
		case control.KindBindingReq:
			if tx, err := control.ParseBindingRequest(b); err == nil {
				cfg.Transport.WriteTo(control.AppendBindingResponse(out[:0], tx, from), addr)
			}
		case control.KindRelayTo:
			if cfg.Table == nil {
				continue
			}
			_, dst, payload, err := control.ParseRelay(b)
			if err != nil {
				cfg.Table.stats.drop(DropMalformed)
				continue
			}
			if to, src, ok := cfg.Table.Route(from, Key(dst)); ok {
				if cfg.Tap != nil {
					cfg.Tap(payload)
				}
				cfg.Table.stats.frames.Add(1)
				cfg.Table.stats.bytes.Add(uint64(len(payload)))
				cfg.Transport.WriteTo(control.AppendRelay(out[:0], control.KindRelayFrom, src[:], payload), to)
			}
		}
	}
}
