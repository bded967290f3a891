package node

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/node/localapi"
)

// Leaving: an ephemeral node (the coord says so in Welcome) logs out when it closes, so the coord
// removes it and its peers forget it at once instead of after the coord's ephemeral timeout.
// `warren down` asks a running node, through the local API, to log out and stop; the node's owner
// (cmd/warren) watches Stopped and calls Close. Stopped also fires on a fatal coord error, such as
// an auth key refused on a reconnect, which no retry can fix.

// logoutTimeout bounds the logout at Close: a coord that does not answer must not hold the node.
const logoutTimeout = 2 * time.Second

// stopSignal is a one-shot "please stop" with a reason. The zero value is ready to use.
type stopSignal struct {
	once      sync.Once
	loggedOut atomic.Bool // the coord acknowledged a logout

	// mu guards the following.
	mu  sync.Mutex
	ch  chan struct{} // made on first use, closed by fire
	err error
}

func (s *stopSignal) done() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *stopSignal) fire(err error) {
	ch := s.done()
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(ch)
	})
}

// Stopped returns a channel that is closed when the node asks its owner to shut it down: after
// `warren down` (POST /v1/down on the local API) or a fatal error (see Err). The node keeps running
// until the owner calls Close.
func (n *Node) Stopped() <-chan struct{} { return n.stop.done() }

// Err returns why Stopped fired: nil for `warren down`, else the fatal error (for example the
// coordination server refusing the node's auth key on a reconnect). It is nil before Stopped fires.
func (n *Node) Err() error {
	n.stop.mu.Lock()
	defer n.stop.mu.Unlock()
	return n.stop.err
}

// fatal reports an error the node cannot recover from; the owner should Close it.
func (n *Node) fatal(err error) {
	n.log.Error("stopping: unrecoverable error", "error", err)
	n.stop.fire(err)
}

// fatalLogin reports whether a refused reconnect is final (the auth key no longer admits the node).
func fatalLogin(err error) bool {
	var cerr *control.Error
	return errors.As(err, &cerr) && cerr.Code == control.CodeAuthKey
}

// Ephemeral reports whether the coordination server treats the node as ephemeral.
func (n *Node) Ephemeral() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.welcome != nil && n.welcome.Ephemeral
}

// Logout ends an ephemeral node's membership at the coordination server at once: the coord removes
// it (networks, address) and tells its peers. It reports whether it logged out; for a node that is
// not ephemeral it does nothing and returns false. Afterwards the node should be closed: it is gone
// from the coord's point of view. Close calls Logout itself.
func (n *Node) Logout(ctx context.Context) (bool, error) {
	if !n.Ephemeral() || n.coord == nil {
		return false, nil
	}
	if n.stop.loggedOut.Load() {
		return true, nil
	}
	if _, err := n.coord.request(ctx, control.Request{Op: control.OpLogout}); err != nil {
		return false, err
	}
	n.stop.loggedOut.Store(true)
	n.log.Info("logged out: the coordination server removed this ephemeral node")
	return true, nil
}

// logoutOnClose logs an ephemeral node out, bounded by logoutTimeout; Close calls it before it
// drops the control connection.
func (n *Node) logoutOnClose() {
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	if _, err := n.Logout(ctx); err != nil {
		n.log.Warn("could not log out; the coordination server removes this ephemeral node after its timeout", "error", err)
	}
}

// handleDown serves POST /v1/down: log out (if ephemeral), then ask the owner to stop.
func (n *Node) handleDown(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out, err := n.Logout(ctx)
	rep := localapi.DownReply{LoggedOut: out}
	if err != nil {
		rep.Error = "could not log out (the coordination server removes this ephemeral node after its timeout): " + err.Error()
	}
	n.log.Info("stopping: asked to through the local API", "logged_out", out)
	n.stop.fire(nil)
	writeJSON(w, http.StatusOK, rep)
}
