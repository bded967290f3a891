package portmap

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// startMapper starts a Mapper against f with a fake clock; changes arrive on the returned channel.
func startMapper(t *testing.T, f *fakeRouter, c *fakeClock) (*Mapper, chan Mapping) {
	t.Helper()
	changes := make(chan Mapping, 16)
	m, err := Start(Config{Gateway: f.addr(), InternalPort: 41641, Lifetime: time.Hour, OnChange: func(mp Mapping) { changes <- mp },
		Timeout: 5 * time.Second, Tries: 2, clock: c}) // the fake answers at once: no test waits this long

	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, changes
}

func nextChange(t *testing.T, ch chan Mapping) Mapping {
	t.Helper()
	select {
	case mp := <-ch:
		return mp
	case <-time.After(10 * time.Second):
		t.Fatal("no mapping change")
		return Mapping{}
	}
}

// TestPCPMapRenewDelete: against a PCP router the Mapper maps the port, renews it at half the
// granted lifetime with the same nonce, suggesting the address it has, and deletes it on Close.
func TestPCPMapRenewDelete(t *testing.T) {
	f := startFake(t, speaksPCP, 120)
	c := newFakeClock()
	m, changes := startMapper(t, f, c)
	want := Mapping{Protocol: ProtoPCP, External: netip.AddrPortFrom(fakeExternal, 42641), Lifetime: 2 * time.Minute}
	if mp := nextChange(t, changes); mp != want {
		t.Fatalf("mapped %+v, want %+v", mp, want)
	}
	first := f.next()
	if first.Version != pcpVersion || first.Internal != 41641 || first.Lifetime != 3600 || first.External.IsValid() && first.External.Port() != 0 {
		t.Errorf("first request %+v", first)
	}
	if m.Current() != want || m.Current().String() != "pcp 203.0.113.5:42641" {
		t.Errorf("current %v", m.Current())
	}
	if d := c.wait(t); d != time.Minute {
		t.Errorf("renewal after %v, want half the granted 2m", d)
	}
	c.fire(time.Minute)
	renew := f.next()
	if renew.Nonce != first.Nonce || renew.External != want.External || renew.Lifetime != 3600 {
		t.Errorf("renewal %+v, want nonce %x and the mapped address suggested", renew, first.Nonce)
	}
	if d := c.wait(t); d != time.Minute {
		t.Errorf("second renewal after %v", d)
	}
	select {
	case mp := <-changes:
		t.Errorf("a renewal to the same address reported a change: %v", mp)
	default:
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	del := f.next()
	if del.Version != pcpVersion || del.Lifetime != 0 || del.Nonce != first.Nonce || del.Internal != 41641 {
		t.Errorf("delete %+v", del)
	}
	if m.Current().IsValid() || m.Current().String() != "none" {
		t.Errorf("current after Close: %v", m.Current())
	}
}

// TestNATPMPFallback: a router that answers PCP with UNSUPP_VERSION, as NAT-PMP's or as an older
// PCP's, gets NAT-PMP: external address, then the map request; Close deletes with lifetime 0.
func TestNATPMPFallback(t *testing.T) {
	for _, mode := range []fakeMode{speaksNATPMP, speaksPCPv1} {
		f := startFake(t, mode, 7200)
		_, changes := startMapper(t, f, newFakeClock())
		want := Mapping{Protocol: ProtoNATPMP, External: netip.AddrPortFrom(fakeExternal, 42641), Lifetime: time.Hour}
		if mp := nextChange(t, changes); mp != want {
			t.Fatalf("mode %d: mapped %+v, want %+v", mode, mp, want)
		}
	}
	f := startFake(t, speaksNATPMP, 7200)
	c := newFakeClock()
	m, changes := startMapper(t, f, c)
	nextChange(t, changes)
	if r := f.next(); r.Version != pcpVersion {
		t.Errorf("first request %+v, want PCP", r)
	}
	if r := f.next(); r.Version != pmpVersion || r.Op != pmpOpAddr {
		t.Errorf("second request %+v, want NAT-PMP's address request", r)
	}
	if r := f.next(); r.Op != pmpOpMapUDP || r.Internal != 41641 || r.Lifetime != 3600 {
		t.Errorf("third request %+v, want NAT-PMP's map request", r)
	}
	if d := c.wait(t); d != 30*time.Minute {
		t.Errorf("renewal after %v, want 30m", d)
	}
	c.fire(30 * time.Minute)
	// The renewal goes straight to NAT-PMP, which worked.
	if r := f.next(); r.Version != pmpVersion || r.Op != pmpOpAddr {
		t.Errorf("renewal began with %+v, want NAT-PMP", r)
	}
	if r := f.next(); r.Op != pmpOpMapUDP {
		t.Errorf("renewal %+v", r)
	}
	c.wait(t)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if r := f.next(); r.Op != pmpOpMapUDP || r.Lifetime != 0 || r.External.Port() != 0 || r.Internal != 41641 {
		t.Errorf("delete %+v, want a map request with lifetime 0", r)
	}
}

// TestRefusedAndSilent: a PCP refusal is not retried with NAT-PMP; a router that answers nothing
// leaves no mapping; both retry after 30 s, then 60 s.
func TestRefusedAndSilent(t *testing.T) {
	for _, mode := range []fakeMode{refusesPCP, silent} {
		f := startFake(t, mode, 7200)
		c := newFakeClock()
		var logged []string
		timeout := 5 * time.Second // a refusal comes at once; a late one must not look like silence
		if mode == silent {
			timeout = 5 * time.Millisecond
		}
		m, err := Start(Config{Gateway: f.addr(), InternalPort: 41641, Timeout: timeout, Tries: 2, clock: c,
			Log: func(msg string, args ...any) { logged = append(logged, msg) }})
		if err != nil {
			t.Fatal(err)
		}
		if d := c.wait(t); d != minRetry {
			t.Errorf("mode %d: retry after %v", mode, d)
		}
		if m.Current().IsValid() {
			t.Errorf("mode %d: mapped %v", mode, m.Current())
		}
		c.fire(minRetry)
		if d := c.wait(t); d != 2*minRetry {
			t.Errorf("mode %d: second retry after %v", mode, d)
		}
		m.Close()
		if len(logged) != 1 || !strings.Contains(logged[0], "failed") {
			t.Errorf("mode %d: logged %q, want one failure", mode, logged)
		}
		if mode == silent {
			for range 2 * (2 + 2) { // two rounds: two PCP tries, then two of NAT-PMP's address request
				f.next()
			}
		} else {
			for range 2 {
				if r := f.next(); r.Version != pcpVersion {
					t.Errorf("a PCP refusal went on to NAT-PMP: %+v", r)
				}
			}
		}
		if len(f.reqs) > 0 {
			t.Errorf("mode %d: more requests than expected: %+v", mode, <-f.reqs)
		}
	}
}

// TestMappingExpires: when renewals fail (refused) the mapping stays until its lifetime is over, then the
// Mapper reports it lost; the next success reports it again.
func TestMappingExpires(t *testing.T) {
	f := startFake(t, speaksPCP, 100)
	c := newFakeClock()
	m, changes := startMapper(t, f, c)
	nextChange(t, changes)
	c.wait(t)
	f.setMode(refusesPCP)
	c.fire(50 * time.Second)
	if d := c.wait(t); d != minRetry {
		t.Errorf("retry after %v", d)
	}
	if !m.Current().IsValid() {
		t.Error("mapping dropped before it expired")
	}
	c.fire(minRetry) // 80 s: not yet
	c.wait(t)
	if !m.Current().IsValid() {
		t.Error("mapping dropped before it expired")
	}
	c.fire(2 * minRetry) // 140 s
	if mp := nextChange(t, changes); mp.IsValid() {
		t.Errorf("after expiry: %v, want none", mp)
	}
	c.wait(t)
	f.setMode(speaksPCP)
	c.fire(4 * minRetry)
	if mp := nextChange(t, changes); mp.Protocol != ProtoPCP {
		t.Errorf("mapped again: %v", mp)
	}
}

func TestStartChecks(t *testing.T) {
	for _, cfg := range []Config{{InternalPort: 1}, {Gateway: netip.MustParseAddrPort("[::1]:5351"), InternalPort: 1},
		{Gateway: netip.MustParseAddrPort("127.0.0.1:5351")}} {
		if m, err := Start(cfg); err == nil {
			m.Close()
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"tun0\t00000000\t01010101\t0001\t0\t0\t0\t00000000\t0\t0\t0\n" + // no RTF_GATEWAY
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	gw, err := parseRoutes(strings.NewReader(table))
	if want := netip.MustParseAddr("192.0.2.1"); err != nil || gw != want {
		t.Errorf("gateway %v, %v; want %v (the lowest metric)", gw, err, want)
	}
	_, err = parseRoutes(strings.NewReader(table[:strings.Index(table, "\n")+1]))
	if !errors.Is(err, ErrNoGateway) {
		t.Errorf("no default route: %v", err)
	}
}
