package store

import (
	"strings"
	"testing"
)

func TestValidNames(t *testing.T) {
	tests := []struct {
		name    string
		network bool // valid as a network name
		node    bool // valid as a node name
	}{
		{"a", true, true},
		{"my-laptop", true, true},
		{"0day", true, true},
		{"lan.home_1", true, false},
		{"-lead", true, false},
		{"trail-", true, false},
		{"", false, false},
		{"Upper", false, false},
		{"with space", false, false},
		{"slash/", false, false},
		{"ünï", false, false},
		{"nul\x00", false, false},
		{strings.Repeat("a", 63), true, true},
		{strings.Repeat("a", 64), true, false},
		{strings.Repeat("a", 65), false, false},
	}
	for _, tt := range tests {
		if err := ValidNetworkName(tt.name); (err == nil) != tt.network {
			t.Errorf("ValidNetworkName(%q) = %v, want valid=%v", tt.name, err, tt.network)
		}
		if err := ValidNodeName(tt.name); (err == nil) != tt.node {
			t.Errorf("ValidNodeName(%q) = %v, want valid=%v", tt.name, err, tt.node)
		}
	}
	if err := ValidNetworkName(strings.Repeat("x", 1<<20)); err == nil || len(err.Error()) > 100 {
		t.Errorf("long name: error %.100q", err)
	}
}
