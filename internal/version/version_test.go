package version

import (
	"runtime/debug"
	"testing"
)

func TestString(t *testing.T) {
	if got := String("v1.2.3-4-gabcdef"); got != "v1.2.3-4-gabcdef" {
		t.Errorf("String(stamped) = %q, want the stamped version", got)
	}
	// A test binary records no module version: what an unstamped build falls back to is the build
	// info's, else Dev.
	want := Dev
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		want = bi.Main.Version
	}
	for _, stamped := range []string{"", Dev} {
		if got := String(stamped); got != want {
			t.Errorf("String(%q) = %q, want %q", stamped, got, want)
		}
	}
}
