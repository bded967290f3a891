package abuse

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestParseBlockList(t *testing.T) {
	for _, bad := range []string{"bogus", "1.2.3.4/8/8", "::ffff:1.2.3.4/120", "1.2.3", "10.0.0.0/8\n\n10.0.0.0/33"} {
		if _, err := ParseBlockList([]byte(bad)); err == nil {
			t.Errorf("ParseBlockList(%q) succeeded", bad)
		}
	}
	if _, err := ParseBlockList([]byte("10.0.0.0/8\n\n10.0.0.0/33\n")); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error %v, want one naming line 3", err)
	}
	b, err := ParseBlockList([]byte("# list\r\n192.0.2.7 # one\n2001:db8::/32\n192.0.2.7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 2 {
		t.Errorf("%d entries, want 2 (a duplicate counts once)", b.Len())
	}
	for a, want := range map[string]bool{"192.0.2.7": true, "::ffff:192.0.2.7": true, "192.0.2.8": false, "2001:db8:1::5": true, "2001:db9::1": false} {
		if got := b.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
	var none *BlockList
	if none.Contains(netip.MustParseAddr("10.0.0.1")) || none.Len() != 0 {
		t.Error("the nil list is not empty")
	}
}

// TestBlockFileReload: a changed file is read again, an unchanged one is not, and a bad edit keeps
// the old list.
func TestBlockFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	if _, err := NewBlockFile(path); err == nil {
		t.Fatal("a missing file was accepted")
	}
	write := func(text string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(path, mtime, mtime)
	}
	t0 := time.Now().Add(-time.Hour)
	write("10.0.0.0/8\n", t0)
	f, err := NewBlockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.1")
	if f.Blocked(a) || !f.Blocked(netip.MustParseAddr("10.1.1.1")) {
		t.Fatal("first load wrong")
	}
	if changed, err := f.Reload(); changed || err != nil {
		t.Fatalf("unchanged file: %v %v", changed, err)
	}
	write("10.0.0.0/8\n192.0.2.1\n", t0.Add(time.Second))
	if changed, err := f.Reload(); !changed || err != nil || !f.Blocked(a) || f.Len() != 2 {
		t.Fatalf("changed file: %v %v, blocked %v", changed, err, f.Blocked(a))
	}
	write("10.0.0.0/8\nnot-an-address\n", t0.Add(2*time.Second))
	if changed, err := f.Reload(); changed || err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad edit: %v %v", changed, err)
	}
	if !f.Blocked(a) {
		t.Fatal("a bad edit dropped the old list")
	}
	if changed, err := f.Reload(); changed || err != nil {
		t.Fatalf("the same bad file again: %v %v (reported once is enough)", changed, err)
	}
	var nilFile *BlockFile
	if nilFile.Blocked(a) {
		t.Error("the nil BlockFile blocks")
	}
}

func TestLimiterBounded(t *testing.T) {
	const buckets = 1000
	l := NewLimiter[netip.Prefix](1, 2, buckets)
	now := time.Now()
	for i := range buckets + 100 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(netip.PrefixFrom(a, 32), now)
	}
	if n := l.Len(); n > buckets {
		t.Fatalf("%d buckets, cap %d", n, buckets)
	}
	l.Sweep(now.Add(3 * time.Second)) // every bucket is full again
	if n := l.Len(); n != 0 {
		t.Fatalf("%d buckets after the sweep", n)
	}
	if !NewLimiter[int](rate.Inf, 1, 1).Allow(0, now) {
		t.Fatal("rate.Inf limited")
	}
}

func TestLimiterWait(t *testing.T) {
	l := NewLimiter[string](2, 2, 10) // a token every 500 ms
	now := time.Now()
	if w := l.Wait("a", now); w != 0 {
		t.Fatalf("unknown key waits %v", w)
	}
	if !l.Allow("a", now) || !l.Allow("a", now) {
		t.Fatal("burst refused")
	}
	if l.Allow("a", now) {
		t.Fatal("beyond the burst allowed")
	}
	if w := l.Wait("a", now); w < 400*time.Millisecond || w > 500*time.Millisecond {
		t.Fatalf("wait %v, want about 500ms", w)
	}
	if !l.Allow("a", now.Add(500*time.Millisecond)) {
		t.Fatal("no token after the wait")
	}
	if !l.Allow("b", now) {
		t.Fatal("another key limited")
	}
}

func FuzzParseBlockList(f *testing.F) {
	f.Add([]byte("# list\n10.0.0.0/8 # spam\n\n2001:db8::1\n"))
	f.Add([]byte("192.0.2.0/24\r\n::/0\n0.0.0.0/0"))
	f.Add([]byte("10.0.0.0/33"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBlockList(data)
		if err != nil {
			return
		}
		// Every entry the file names is blocked.
		for _, line := range strings.Split(string(data), "\n") {
			e, ok, err := parseBlockLine(line)
			if err != nil {
				t.Fatalf("list parsed but line %q does not: %v", line, err)
			}
			if ok && !b.Contains(e.Prefix.Addr()) {
				t.Fatalf("%v parsed but not contained", e.Prefix)
			}
		}
	})
}

func TestBlockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist")
	if e, err := ReadBlockFile(path); err != nil || len(e) != 0 {
		t.Fatalf("missing file: %v %v", e, err)
	}
	if _, err := ReadBlockFile(""); err == nil {
		t.Error("no file name accepted")
	}
	os.WriteFile(path, []byte("# operator's list\n10.0.0.0/8 # spam\n\n2001:db8::1\n"), 0o640)
	for _, tc := range []struct {
		entry, comment string
		changed        bool
	}{
		{"192.0.2.7", "one host", true},
		{"198.51.100.9/24", "", true}, // masked on the way in
		{"10.1.2.3/8", "again", false},
		{"2001:db8::1/128", "", false},
	} {
		p, err := ParseBlockPrefix(tc.entry)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := AddBlock(path, p, tc.comment); err != nil || changed != tc.changed {
			t.Errorf("add %s: %v %v, want changed %v", tc.entry, changed, err, tc.changed)
		}
	}
	if _, err := AddBlock(path, netip.MustParsePrefix("192.0.2.8/32"), "two\n10.9.9.9"); err == nil {
		t.Error("a comment with a newline was accepted")
	}
	if err := RemoveBlock(path, netip.MustParsePrefix("10.0.0.0/8")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveBlock(path, netip.MustParsePrefix("10.0.0.0/8")); !errors.Is(err, ErrNotBlocked) {
		t.Errorf("remove twice: %v", err)
	}
	data, _ := os.ReadFile(path)
	want := "# operator's list\n\n2001:db8::1\n192.0.2.7 # one host\n198.51.100.0/24\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want kept 0640", fi.Mode())
	}
	got, err := ReadBlockFile(path)
	if err != nil || len(got) != 3 || got[1].Comment != "one host" || got[2].Prefix.String() != "198.51.100.0/24" {
		t.Errorf("read: %+v %v", got, err)
	}
	// The server parses what the tools write.
	if b, err := ParseBlockList(data); err != nil || !b.Contains(netip.MustParseAddr("198.51.100.200")) || b.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Errorf("server's view: %v", err)
	}
	os.WriteFile(path, []byte("10.0.0.0/8\nnot an address\n"), 0o600)
	if _, err := ReadBlockFile(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := AddBlock(path, netip.MustParsePrefix("192.0.2.8/32"), ""); err == nil {
		t.Error("edited a file with a bad line")
	}
	for _, bad := range []string{"", "10.0.0.0/33", "::ffff:10.0.0.0/104", "host.example", "10.0.0.1%eth0/8"} {
		if _, err := ParseBlockPrefix(bad); err == nil {
			t.Errorf("ParseBlockPrefix(%q) succeeded", bad)
		}
	}
}
