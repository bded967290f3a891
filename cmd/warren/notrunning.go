package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/warren-net/warren/node/localapi"
)

// stateDir is the --state flag of the command being run (set by stateFlag), so that main can say
// which directory a failed connection to a node was about.
var stateDir *string

// explainNotRunning turns the local API's ErrNotRunning into an error that names the state directory
// and tells the cases apart: the directory does not exist, the socket may not be opened by this user
// (the node runs as someone else), or no node listens there. dial connects to the socket (net.Dial
// in use; a fake in tests). Other errors are returned as they are.
func explainNotRunning(err error, state string, dial func(socket string) error) error {
	if !errors.Is(err, localapi.ErrNotRunning) {
		return err
	}
	sock := filepath.Join(state, localapi.SocketName)
	_, serr := os.Stat(state)
	derr := dial(sock)
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return notRunning("no node is running with state directory %s: the directory does not exist (start a node with 'warren up', or name its directory with --state or WARREN_STATE)", state)
	case errors.Is(serr, fs.ErrPermission) || errors.Is(derr, fs.ErrPermission):
		return notRunning("cannot reach the node with state directory %s: permission denied on %s (run as the user that started the node)", state, sock)
	case derr == nil:
		return err // a node answers now; the first failure stands
	}
	return notRunning("no node is running with state directory %s (start one with 'warren up')", state)
}

// dialSocket connects to the node's API socket and closes the connection at once.
func dialSocket(socket string) error {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	return c.Close()
}

// notRunningError is ErrNotRunning said in more detail; errors.Is still finds ErrNotRunning.
type notRunningError struct{ msg string }

func (e *notRunningError) Error() string { return e.msg }
func (e *notRunningError) Unwrap() error { return localapi.ErrNotRunning }

func notRunning(format string, args ...any) error {
	return &notRunningError{fmt.Sprintf(format, args...)}
}
