package peer

import (
	"encoding/binary"
	"errors"

	"github.com/quic-go/quic-go"
)

// Full-size DATAGRAM packets, so that quic-go batches them.
//
// quic-go sends a burst of packets in one sendmsg with UDP GSO, but only while each packet it packs
// is exactly the connection's current packet size (the kernel needs every segment but the last to
// be that size: connection.go, sendPacketsWithGSO). A stream's packets are full; a DATAGRAM packet
// is as long as the datagram, so on the packet path every overlay packet cost a sendmsg of its own
// (a quarter of a node's CPU in a bulk transfer, the loopback delivery included). Send pads a large
// overlay packet with zeros to the size that fills a QUIC packet exactly; the receiver cuts the
// padding off by the IP header's length (unpad). Small packets (a game's, an ACK) are not padded:
// they gain nothing from a batch and would pay for the padding in bytes.
//
// The fill size follows from quic-go's short header and DATAGRAM framing: a packet of size P
// carries 1 (flags) + the destination connection ID + 2 (packet number, below 2^15 unacknowledged
// packets, which quic-go's congestion window never reaches) + 16 (AEAD tag) bytes of overhead, and a
// DATAGRAM frame that is the packet's last frame needs only its type byte. quic-go accepts a
// datagram of at most P-37 bytes (SendDatagram reserves a 20-byte connection ID), which our
// datagram of P-1-connIDLen-2-16-1 bytes fits only with connIDLen ≥ 17: so warren's transports use
// 20-byte connection IDs (connIDLen), 16 bytes more per packet than quic-go's default of 4, and the
// fill size is P-40. A peer with shorter connection IDs gets packets a little short of P: unbatched,
// as before, and otherwise fine.
const connIDLen = 20

// fillSlack is the overhead between quic-go's accepted datagram size (P-37) and the fill size (P-40).
const fillSlack = 3

// padFrom is how close to the fill size a packet must be to be padded: within 1/8 of it (a full
// 1280-byte overlay packet pads by about 10% at the 1452-byte packets of a 1500-byte path).
func padFrom(fill int) int { return fill * 7 / 8 }

// fillRefresh is how many large sends (minPadded bytes or more) pass between two reads of the
// connection's datagram size, which grows as quic-go discovers the path MTU (and shrinks back after
// a path change, which a refused datagram also reveals at once). minPadded is below padFrom of the
// smallest fill size (1200-byte packets, quic-go's least: fill 1160, padded from 1015 bytes).
const (
	fillRefresh = 128
	minPadded   = 1000
)

// maxFill bounds the fill size (a 1500-byte path gives 1452-byte QUIC packets, a 9000-byte jumbo
// path more: beyond maxFill no padding). It sizes Send's stack buffer.
const maxFill = 1500

// oversized is larger than any datagram quic-go accepts: SendDatagram refuses it at once with the
// size it would take, which is how readFill learns it. It is never written or sent.
var oversized [1 << 16]byte

// readFill asks the connection for its largest datagram and returns the fill size, 0 if none fits.
func readFill(conn *quic.Conn) int {
	var tooLarge *quic.DatagramTooLargeError
	if err := conn.SendDatagram(oversized[:]); !errors.As(err, &tooLarge) {
		return 0
	}
	fill := int(tooLarge.MaxDatagramPayloadSize) - fillSlack
	if fill <= 0 || fill > maxFill {
		return 0
	}
	return fill
}

// sendDatagram sends pkt on l, padded to the fill size if it is large.
func (l *link) sendDatagram(pkt []byte) error {
	fill := int(l.fill.Load())
	if len(pkt) >= minPadded && l.large.Add(1)%fillRefresh == 0 {
		fill = readFill(l.conn)
		l.fill.Store(int32(fill))
	}
	if fill == 0 || len(pkt) < padFrom(fill) || len(pkt) >= fill || ipLen(pkt) != len(pkt) {
		return l.conn.SendDatagram(pkt)
	}
	var buf [maxFill]byte
	copy(buf[:], pkt)
	err := l.conn.SendDatagram(buf[:fill])
	if err != nil && errors.As(err, new(*quic.DatagramTooLargeError)) {
		// The path's packets shrank (a new path starts small again): send it as it is.
		l.fill.Store(int32(readFill(l.conn)))
		return l.conn.SendDatagram(pkt)
	}
	return err
}

// unpad cuts the padding off an IP packet: what follows the length its header gives. Anything else
// (not IP, too short for its header, shorter than its length) is returned as it is: the receiver
// drops what is not a valid packet.
func unpad(pkt []byte) []byte {
	if n := ipLen(pkt); n > 0 && n < len(pkt) {
		return pkt[:n]
	}
	return pkt
}

// ipLen returns the length an IPv4 or IPv6 packet's header gives, 0 if pkt is too short for the
// header or not IP. Only such packets are padded, so that unpad restores exactly what was sent.
func ipLen(pkt []byte) int {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(pkt[2:4]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
	}
	return 0
}
