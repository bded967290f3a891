// Package privdir checks that a directory is private to the user running the program: a data or
// state directory holding keys and a control socket must not be one another user could write to
// (and so replace the socket or the keys in).
package privdir

import (
	"fmt"
	"os"
)

// Check refuses dir if it is not a directory, if its group or other users may write to it, or if it
// belongs to another user. what names it in errors ("data directory", "state directory").
func Check(dir, what string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	if modeBits && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s is writable by other users (mode %v); chmod 700 it", what, dir, fi.Mode().Perm())
	}
	if uid, ok := ownerUID(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("%s %s belongs to uid %d, not to this user (uid %d)", what, dir, uid, os.Getuid())
	}
	return nil
}
