package abuse

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestGuard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	if err := os.WriteFile(path, []byte("192.0.2.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := NewGuard(GuardConfig{BlockList: path, LoginRateIP: 1, LoginBurstIP: 2, LoginRateKey: 1, LoginBurstKey: 3})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := [32]byte{1}, [32]byte{2}, [32]byte{3}
	ip := netip.MustParseAddr("198.51.100.7")
	if v := g.CheckLogin(k1, netip.MustParseAddr("::ffff:192.0.2.9")); v != Blocked {
		t.Fatalf("mapped blocked address: %v", v)
	}
	if v := g.CheckLogin(k1, ip); v != Allowed {
		t.Fatalf("first login: %v", v)
	}
	if v := g.CheckLogin(k2, ip); v != Allowed {
		t.Fatalf("second login: %v", v)
	}
	if v := g.CheckLogin(k3, ip); v != TooManyFromIP {
		t.Fatalf("third login from one address: %v", v)
	}
	// Neither the blocked attempt nor the one over the address's rate took a token of the key: k1 and
	// k3 have 2 and 3 logins left.
	for i, a := range []string{"203.0.113.1", "203.0.113.2"} {
		if v := g.CheckLogin(k1, netip.MustParseAddr(a)); v != Allowed {
			t.Fatalf("k1 login %d from a fresh address: %v", i+2, v)
		}
	}
	if v := g.CheckLogin(k1, netip.MustParseAddr("203.0.113.3")); v != TooManyWithKey {
		t.Fatalf("k1's fourth login: %v", v)
	}
	for i := range 3 {
		if v := g.CheckLogin(k3, netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)})); v != Allowed {
			t.Fatalf("k3 login %d from a fresh address: %v", i+1, v)
		}
	}
	// One IPv6 /64 is one source; loopback is limited per key only.
	v6 := GuardConfig{LoginRateIP: 1, LoginBurstIP: 1, LoginRateKey: rate.Inf}
	g6, _ := NewGuard(v6)
	if g6.CheckLogin(k1, netip.MustParseAddr("2001:db8:1:2::1")) != Allowed ||
		g6.CheckLogin(k2, netip.MustParseAddr("2001:db8:1:2:ffff::9")) != TooManyFromIP ||
		g6.CheckLogin(k2, netip.MustParseAddr("2001:db8:1:3::1")) != Allowed {
		t.Error("IPv6 sources are not counted per /64")
	}
	for range 3 {
		if v := g6.CheckLogin(k3, netip.MustParseAddr("127.0.0.1")); v != Allowed {
			t.Fatalf("loopback limited per address: %v", v)
		}
	}
	v6.LimitLoopback = true
	g6, _ = NewGuard(v6)
	if g6.CheckLogin(k3, netip.MustParseAddr("127.0.0.1")) != Allowed || g6.CheckLogin(k3, netip.MustParseAddr("127.0.0.1")) != TooManyFromIP {
		t.Error("LimitLoopback does not limit loopback")
	}
	// The zero config: defaults, no block list.
	g0, err := NewGuard(GuardConfig{})
	if err != nil || g0.Blocked(netip.MustParseAddr("192.0.2.1")) {
		t.Fatalf("zero config: %v", err)
	}
	for range DefaultLoginBurstKey {
		g0.CheckLogin(k1, ip)
	}
	if v := g0.CheckLogin(k1, ip); v != TooManyWithKey {
		t.Errorf("default per-key burst: %v", v)
	}
	if err := g0.Reload(func() { t.Error("changed without a list") }); err != nil {
		t.Errorf("Reload without a list: %v", err)
	}

	// Reload runs changed when the file changed, and only then.
	calls := 0
	if err := g.Reload(func() { calls++ }); err != nil || calls != 0 {
		t.Fatalf("unchanged file: %v, %d calls", err, calls)
	}
	if err := os.WriteFile(path, []byte("192.0.2.0/24\n198.51.100.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	g.Maintain(func() { calls++ })
	if calls != 1 || !g.Blocked(ip) {
		t.Fatalf("changed file: %d calls, %v blocked %v", calls, ip, g.Blocked(ip))
	}
}
