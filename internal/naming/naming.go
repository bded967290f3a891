// Package naming holds the rules for the names people give things in warren — node names (also
// tags) and network names — so that the coord's store, which records them, and the control
// protocol, which checks what arrives from the other side, apply one rule. It knows nothing else.
package naming

import "fmt"

// MaxNetwork is the longest network name.
const MaxNetwork = 64

// Node returns nil if name is a node name (also a tag): a lower-case DNS label, 1-63 characters of
// a-z, 0-9 and '-', neither starting nor ending with '-'.
func Node(name string) error {
	if len(name) == 0 || len(name) > 63 {
		return fmt.Errorf("invalid node name: %d characters, want 1-63", len(name))
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("invalid node name %q: must not start or end with '-'", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("invalid node name %q: use lower-case letters, digits and '-'", name)
		}
	}
	return nil
}

// Network returns nil if name is a network name: 1-64 characters of a-z, 0-9, '-', '_' and '.'.
// Upper case is refused rather than folded, so that a name means one network.
func Network(name string) error {
	if len(name) == 0 || len(name) > MaxNetwork {
		return fmt.Errorf("invalid network name: %d characters, want 1-%d", len(name), MaxNetwork)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid network name %q: use lower-case letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}
