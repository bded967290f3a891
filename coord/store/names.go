package store

import "fmt"

// ValidNetworkName returns nil if name is a valid network name: 1-64 characters of a-z, 0-9, '-',
// '_' and '.'. Upper case is refused rather than folded, so a name means one network.
func ValidNetworkName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("invalid network name: %d characters, want 1-64", len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid network name %q: use lower-case letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// ValidNodeName returns nil if name is a valid node name: a lower-case DNS label, 1-63 characters of
// a-z, 0-9 and '-', neither starting nor ending with '-'.
func ValidNodeName(name string) error {
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

// ValidTag returns nil if tag is a valid node tag (as carried by auth keys): the same rules as a
// node name, a lower-case DNS label of 1-63 characters.
func ValidTag(tag string) error {
	if err := ValidNodeName(tag); err != nil {
		return fmt.Errorf("invalid tag %q: use 1-63 lower-case letters, digits and '-', not at either end", tag)
	}
	return nil
}
