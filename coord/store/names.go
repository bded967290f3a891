package store

import (
	"fmt"

	"github.com/warren-net/warren/internal/naming"
)

// ValidNetworkName returns nil if name is a valid network name: 1-64 characters of a-z, 0-9, '-',
// '_' and '.'. Upper case is refused rather than folded, so a name means one network.
func ValidNetworkName(name string) error { return naming.Network(name) }

// ValidNodeName returns nil if name is a valid node name: a lower-case DNS label, 1-63 characters of
// a-z, 0-9 and '-', neither starting nor ending with '-'.
func ValidNodeName(name string) error { return naming.Node(name) }

// ValidTag returns nil if tag is a valid node tag (as carried by auth keys): the same rules as a
// node name, a lower-case DNS label of 1-63 characters.
func ValidTag(tag string) error {
	if err := ValidNodeName(tag); err != nil {
		return fmt.Errorf("invalid tag %q: use 1-63 lower-case letters, digits and '-', not at either end", tag)
	}
	return nil
}
