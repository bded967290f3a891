package netstack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is the stack's NIC: a point-to-point, header-less link (like a TUN device). Outbound packets are
// flattened into a pooled buffer and handed to output synchronously; inbound packets arrive through
// deliver. No goroutine, no queue: backpressure flows straight to the stack's writer.
type link struct {
	mtu    atomic.Uint32
	output func([]byte)
	stats  *Stats

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	onClose    func()
}

var _ stack.LinkEndpoint = (*link)(nil)

// maxPacket is the largest IP packet the stack accepts or builds.
const maxPacket = 65535

var pktPool = sync.Pool{New: func() any { return new([maxPacket]byte) }}

func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		buf := pktPool.Get().(*[maxPacket]byte)
		b := buf[:0]
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		l.stats.PacketsOut.Add(1)
		l.output(b)
		pktPool.Put(buf)
		n++
	}
	return n, nil
}

// deliver hands one inbound packet to the stack. It reports false if the link is not attached.
func (l *link) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) bool {
	l.mu.RLock()
	d := l.dispatcher
	l.mu.RUnlock()
	if d == nil {
		return false
	}
	d.DeliverNetworkPacket(proto, pkt)
	return true
}

func (l *link) MTU() uint32                                  { return l.mtu.Load() }
func (l *link) SetMTU(mtu uint32)                            { l.mtu.Store(mtu) }
func (l *link) MaxHeaderLength() uint16                      { return 0 }
func (l *link) LinkAddress() tcpip.LinkAddress               { return "" }
func (l *link) SetLinkAddress(tcpip.LinkAddress)             {}
func (l *link) Capabilities() stack.LinkEndpointCapabilities { return stack.CapabilityNone }
func (l *link) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (l *link) AddHeader(*stack.PacketBuffer)                {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (l *link) Wait()                                        {}

func (l *link) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	l.dispatcher = d
	l.mu.Unlock()
}

func (l *link) IsAttached() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dispatcher != nil
}

func (l *link) Close() {
	l.mu.Lock()
	l.dispatcher = nil
	f := l.onClose
	l.mu.Unlock()
	if f != nil {
		f()
	}
}

func (l *link) SetOnCloseAction(f func()) {
	l.mu.Lock()
	l.onClose = f
	l.mu.Unlock()
}
