package netstack

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestFlatten: flatten yields a packet's headers and then its payload, over several views and with
// bytes reserved in front of the headers, the same bytes as PacketBuffer.AsSlices, and allocates
// nothing.
func TestFlatten(t *testing.T) {
	var payload buffer.Buffer
	payload.Append(buffer.NewViewWithData(bytes.Repeat([]byte{'a'}, 700)))
	payload.Append(buffer.NewViewWithData(bytes.Repeat([]byte{'b'}, 500)))
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 64, Payload: payload})
	defer pkt.DecRef()
	copy(pkt.TransportHeader().Push(20), bytes.Repeat([]byte{'t'}, 20))
	copy(pkt.NetworkHeader().Push(20), bytes.Repeat([]byte{'n'}, 20))

	var want []byte
	for _, s := range pkt.AsSlices() {
		want = append(want, s...)
	}
	if len(want) != 1240 || want[0] != 'n' || want[20] != 't' || want[40] != 'a' || want[1239] != 'b' {
		t.Fatalf("the test's packet is not what it meant to build: %d bytes, %q...", len(want), want[:41])
	}
	buf := make([]byte, 0, maxPacket)
	if got := flatten(buf, pkt); !bytes.Equal(got, want) {
		t.Fatalf("flatten: %d bytes, want %d:\n%q\n%q", len(got), len(want), got, want)
	}
	if got := flatten([]byte("prefix"), pkt); !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Errorf("flatten does not append to what b holds")
	}
	if n := testing.AllocsPerRun(100, func() { flatten(buf, pkt) }); n != 0 {
		t.Errorf("flatten allocates %v times per packet", n)
	}
}
