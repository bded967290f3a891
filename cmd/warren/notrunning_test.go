package main

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/warren-net/warren/node/localapi"
)

// TestExplainNotRunning: the CLI's "no node" error names the state directory and tells a missing
// directory, a socket this user may not open and an absent node apart.
func TestExplainNotRunning(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nobody")
	noSocket := func(string) error { return syscall.ENOENT }
	denied := func(string) error { return &net.OpError{Op: "dial", Net: "unix", Err: syscall.EACCES} }
	for _, tc := range []struct {
		name  string
		state string
		dial  func(string) error
		want  []string
	}{
		{"missing dir", missing, noSocket, []string{"no node is running", missing, "does not exist"}},
		{"no node", dir, noSocket, []string{"no node is running", dir, "warren up"}},
		{"permission", dir, denied, []string{"permission denied", dir, localapi.SocketName}},
	} {
		err := explainNotRunning(localapi.ErrNotRunning, tc.state, tc.dial)
		if !errors.Is(err, localapi.ErrNotRunning) {
			t.Errorf("%s: %v is not ErrNotRunning", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
	if tc := explainNotRunning(localapi.ErrNotRunning, dir, noSocket); strings.Contains(tc.Error(), "does not exist") {
		t.Errorf("existing directory called missing: %v", tc)
	}
	other := errors.New("something else")
	if err := explainNotRunning(other, dir, noSocket); err != other {
		t.Errorf("other error changed: %v", err)
	}
	// The real dial of a socket nobody listens on.
	if err := dialSocket(filepath.Join(dir, localapi.SocketName)); err == nil {
		t.Error("dialSocket of no socket succeeded")
	}
}
