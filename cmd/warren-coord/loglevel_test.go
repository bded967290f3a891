package main

import (
	"strings"
	"testing"
)

// TestUnknownLogLevel: warren-coord and warren-coord relay refuse a --log-level they do not know,
// naming the valid ones, before they open anything.
func TestUnknownLogLevel(t *testing.T) {
	for _, args := range [][]string{
		{"--log-level", "loud", "--data", t.TempDir(), "--listen", "127.0.0.1:0"},
		{"relay", "--log-level", "loud", "--key", t.TempDir() + "/relay.key", "--listen", "127.0.0.1:0"},
	} {
		err := run(args)
		if err == nil || !strings.Contains(err.Error(), `--log-level "loud"`) || !strings.Contains(err.Error(), "trace, debug, info, warn, error, off") {
			t.Errorf("%q: got %v, want an error naming the valid levels", args, err)
		}
	}
}
