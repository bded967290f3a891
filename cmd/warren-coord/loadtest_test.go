package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestLoadtestFlags: the load test refuses a run it cannot make before it opens a socket.
func TestLoadtestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--coord is required"},
		{[]string{"--coord", "127.0.0.1:1", "--nodes", "1"}, "nodes: 1, want 2 to"},
		{[]string{"--coord", "127.0.0.1:1", "--networks-of", "1"}, "networks-of: 1, want 2 to"},
		{[]string{"--coord", "127.0.0.1:1", "--churn", "-1"}, "churn: -1"},
		{[]string{"--coord", "127.0.0.1:1", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--coord", "127.0.0.1:1", "extra"}, `unexpected argument "extra"`},
	} {
		var out bytes.Buffer
		err := cmdLoadtest(tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadtest %q: %v, want an error containing %q", tc.args, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("loadtest %q printed %q", tc.args, out.String())
		}
	}
}
