// Package version names the build a binary came from, for `warren version` and `warren-coord
// version`.
package version

import "runtime/debug"

// Dev is the version of a binary built without -ldflags "-X main.version=...".
const Dev = "dev"

// String returns stamped, the version the build set with -ldflags "-X main.version=..." (make build
// and make release set `git describe`), or, for a binary built without it, the module version the
// go command recorded (a tag for `go install ...@v1.2.3`, a pseudo-version for a build from a git
// checkout), or Dev.
func String(stamped string) string {
	if stamped != "" && stamped != Dev {
		return stamped
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return Dev
}
