package portmap

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// The fake router: PCP and NAT-PMP on loopback UDP, for this package's tests only.

var fakeExternal = netip.MustParseAddr("203.0.113.5")

// fakeMode says which protocols the fake router speaks.
type fakeMode int

const (
	speaksPCP    fakeMode = iota // PCP and NAT-PMP
	speaksNATPMP                 // NAT-PMP only: PCP gets NAT-PMP's Unsupported Version
	speaksPCPv1                  // an older PCP: UNSUPP_VERSION with version 1 in a PCP header
	refusesPCP                   // PCP's NOT_AUTHORIZED
	silent                       // reads and never answers
)

// request is a request the fake router received, decoded.
type request struct {
	Version  byte
	Op       byte
	Lifetime uint32
	Internal uint16
	External netip.AddrPort // PCP: suggested; NAT-PMP: the suggested port only
	Nonce    [12]byte
}

type fakeRouter struct {
	t        *testing.T
	conn     *net.UDPConn
	lifetime uint32 // granted at most
	reqs     chan request
	mu       sync.Mutex
	mode     fakeMode
	wg       sync.WaitGroup
}

func startFake(t *testing.T, mode fakeMode, lifetime uint32) *fakeRouter {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRouter{t: t, conn: conn, lifetime: lifetime, reqs: make(chan request, 64), mode: mode}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() { conn.Close(); f.wg.Wait() })
	return f
}

func (f *fakeRouter) addr() netip.AddrPort {
	return netip.MustParseAddrPort(f.conn.LocalAddr().String())
}

func (f *fakeRouter) setMode(m fakeMode) { f.mu.Lock(); f.mode = m; f.mu.Unlock() }

// next returns the next request the router received.
func (f *fakeRouter) next() request {
	f.t.Helper()
	select {
	case r := <-f.reqs:
		return r
	case <-time.After(10 * time.Second):
		f.t.Fatal("no request reached the fake router")
		return request{}
	}
}

func (f *fakeRouter) serve() {
	defer f.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		mode := f.mode
		f.mu.Unlock()
		if resp := f.answer(buf[:n], mode); resp != nil {
			f.conn.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (f *fakeRouter) answer(b []byte, mode fakeMode) []byte {
	if len(b) < 2 {
		return nil
	}
	r := request{Version: b[0], Op: b[1]}
	switch {
	case b[0] == pcpVersion && len(b) == pcpMapLen:
		r.Lifetime, r.Nonce, r.Internal = binary.BigEndian.Uint32(b[4:]), [12]byte(b[24:36]), binary.BigEndian.Uint16(b[40:])
		r.External = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[44:60])).Unmap(), binary.BigEndian.Uint16(b[42:]))
	case b[0] == pmpVersion && b[1] == pmpOpMapUDP && len(b) == pmpMapRequestLen:
		r.Internal = binary.BigEndian.Uint16(b[4:])
		r.External = netip.AddrPortFrom(netip.Addr{}, binary.BigEndian.Uint16(b[6:]))
		r.Lifetime = binary.BigEndian.Uint32(b[8:])
	}
	f.reqs <- r
	if mode == silent {
		return nil
	}
	lifetime := min(r.Lifetime, f.lifetime)
	if b[0] == pcpVersion {
		switch mode {
		case speaksNATPMP:
			return pmpResponseBytes(b[1], resultUnsuppVersion, nil)
		case speaksPCPv1:
			h := make([]byte, 24)
			h[0], h[1], h[3] = 1, pcpResponseOp|b[1], resultUnsuppVersion
			return h
		case refusesPCP:
			return pcpResponseBytes(2, 0, r.Nonce, r.Internal, netip.AddrPort{})
		}
		ext := netip.AddrPort{}
		if lifetime > 0 {
			ext = netip.AddrPortFrom(fakeExternal, r.Internal+1000)
		}
		return pcpResponseBytes(resultSuccess, lifetime, r.Nonce, r.Internal, ext)
	}
	switch b[1] {
	case pmpOpAddr:
		return pmpResponseBytes(pmpOpAddr, resultSuccess, fakeExternal.AsSlice())
	case pmpOpMapUDP:
		var body [8]byte
		binary.BigEndian.PutUint16(body[0:], r.Internal)
		if lifetime > 0 {
			binary.BigEndian.PutUint16(body[2:], r.Internal+1000)
		}
		binary.BigEndian.PutUint32(body[4:], lifetime)
		return pmpResponseBytes(pmpOpMapUDP, resultSuccess, body[:])
	}
	return nil
}

// pmpResponseBytes encodes a NAT-PMP response: header, then body.
func pmpResponseBytes(op byte, result uint16, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = pmpVersion, pcpResponseOp|op
	binary.BigEndian.PutUint16(b[2:], result)
	binary.BigEndian.PutUint32(b[4:], 1234)
	return append(b, body...)
}

// pcpResponseBytes encodes a PCP MAP response.
func pcpResponseBytes(result byte, lifetime uint32, nonce [12]byte, internal uint16, ext netip.AddrPort) []byte {
	b := make([]byte, pcpMapLen)
	b[0], b[1], b[3] = pcpVersion, pcpResponseOp|pcpOpMap, result
	binary.BigEndian.PutUint32(b[4:], lifetime)
	binary.BigEndian.PutUint32(b[8:], 1234)
	copy(b[24:], nonce[:])
	b[36] = protoUDP
	binary.BigEndian.PutUint16(b[40:], internal)
	binary.BigEndian.PutUint16(b[42:], ext.Port())
	if ext.Addr().IsValid() {
		a := ext.Addr().As16()
		copy(b[44:], a[:])
	}
	return b
}

// fakeClock runs the renewal schedule: each After is reported on waits and fires when the test
// calls fire.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	timer chan time.Time
	waits chan time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1e9, 0), waits: make(chan time.Duration, 16)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.timer = ch
	c.mu.Unlock()
	c.waits <- d
	return ch
}

// wait returns the duration of the Mapper's next wait.
func (c *fakeClock) wait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the mapper did not wait")
		return 0
	}
}

// fire moves the clock by d and ends the pending wait.
func (c *fakeClock) fire(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	ch := c.timer
	c.mu.Unlock()
	ch <- c.now
}
