package netstack

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is the stack's NIC: a point-to-point, header-less link (like a TUN device). Outbound packets
// are flattened into a pooled buffer and handed to output synchronously; inbound packets arrive
// through deliver. No goroutine, no queue: backpressure flows straight to the stack's writer.
//
// It advertises one capability, receive checksum offload: gVisor does not check the checksums of
// inbound packets. Every packet a stack gets comes from a peer over an authenticated, encrypted
// link (QUIC's AEAD: a wrong checksum can only be the sending peer's own doing, and spoils only its
// own flow) or from this host's kernel (a TUN device, which hands over large TCP segments with their
// checksums left undone); and it is what lets coalesced segments (gather.go) through, whose
// headers keep the first segment's checksums. Inbound TCP segments are still checked where they
// are coalesced. It declares gVisor GSO (GSOMaxSize, SupportedGSO): gVisor's TCP then queues and
// tracks segments of up to 64 KB and cuts each into the MTU's as it sends it, with full checksums,
// so no packet larger than the MTU reaches WritePackets. No transmit checksum offload (every
// packet leaves with valid checksums, as the peer's stack or a kernel TUN expects).
type link struct {
	mtu    atomic.Uint32
	output func([]byte)
	stats  *counters
	log    hclog.Logger

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher // nil when detached
	onClose    func()
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
)

// pktPool holds flattening buffers, one per WritePackets call; a pointer to an array avoids an
// allocation per Get.
var pktPool = sync.Pool{New: func() any { return new([maxPacket]byte) }}

func newLink(mtu uint32, output func([]byte), stats *counters, log hclog.Logger) *link {
	l := &link{output: output, stats: stats, log: log}
	l.mtu.Store(mtu)
	return l
}

// WritePackets flattens each packet and passes it to output, synchronously.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	buf := pktPool.Get().(*[maxPacket]byte)
	defer pktPool.Put(buf)
	mtu := int(l.mtu.Load())
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		size := pkt.Size()
		if size > mtu {
			l.stats.oversize.Add(1)
			if l.log.IsTrace() {
				l.log.Trace("drop outbound packet over the MTU", "len", size, "mtu", mtu)
			}
			continue
		}
		b := flatten(buf[:0], pkt)
		l.stats.packetsOut.Add(1)
		l.stats.bytesOut.Add(uint64(len(b)))
		l.output(b)
	}
	return n, nil
}

// flatten appends pkt's bytes (its headers, then its payload) to b. It walks the packet's views in
// place: PacketBuffer.AsSlices allocates a slice per call and clones every view (two atomic
// reference-count updates each), which cost about 5% of a sending node's CPU on the packet path.
func flatten(b []byte, pkt *stack.PacketBuffer) []byte {
	views, skip := pkt.AsViewList() // skip: bytes reserved in front of the headers
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		b = append(b, s[skip:]...)
		skip = 0
	}
	return b
}

// deliver hands one inbound packet to the stack. It reports false if the link is not attached
// (before CreateNIC or after Close).
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

func (l *link) MTU() uint32                      { return l.mtu.Load() }
func (l *link) SetMTU(mtu uint32)                { l.mtu.Store(mtu) }
func (l *link) MaxHeaderLength() uint16          { return 0 }
func (l *link) LinkAddress() tcpip.LinkAddress   { return "" }
func (l *link) SetLinkAddress(tcpip.LinkAddress) {}
func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *link) AddHeader(*stack.PacketBuffer)           {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) Wait()                                   {}

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

// GSOMaxSize and SupportedGSO declare gVisor GSO (see link).
func (l *link) GSOMaxSize() uint32               { return stack.GVisorGSOMaxSize }
func (l *link) SupportedGSO() stack.SupportedGSO { return stack.GVisorGSOSupported }
