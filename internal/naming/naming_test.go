package naming

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"laptop": true, "a": true, "web-1": true, strings.Repeat("a", 63): true,
		"": false, "-web": false, "web-": false, "Web": false, "web_1": false, "web.1": false,
		strings.Repeat("a", 64): false, "bob\x1b[31m": false, "ｂob": false,
	} {
		if got := Node(name) == nil; got != ok {
			t.Errorf("Node(%q) ok=%v, want %v", name, got, ok)
		}
	}
	for name, ok := range map[string]bool{
		"friends": true, "lan.party_2": true, "-x": true, strings.Repeat("a", 64): true,
		"": false, "Friends": false, "a b": false, strings.Repeat("a", 65): false, "lan\n": false,
	} {
		if got := Network(name) == nil; got != ok {
			t.Errorf("Network(%q) ok=%v, want %v", name, got, ok)
		}
	}
}
