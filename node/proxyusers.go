package node

import (
	"net"
	"sync"
	"time"

	"github.com/warren-net/warren/internal/peercred"
)

// The proxy acts with the node's key and the node's access-rule grants, so on a shared machine it
// serves only the node's own user and root (and the users Config.ProxyUsers adds): on loopback every
// user shares 127.0.0.1, so a client is told by who owns its socket. The same proxy also listens on
// a unix socket in the state directory, which the directory's 0700 mode already keeps to its owner.

// ProxySocketFile is the name of the proxy's unix socket in the state directory.
const ProxySocketFile = "proxy.sock"

// refusalLogEvery bounds the log lines about refused local users.
const refusalLogEvery = 10 * time.Second

// localUsersOnly wraps a proxy listener so that it serves only the users the policy allows.
func (n *Node) localUsersOnly(ln net.Listener) net.Listener {
	var mu sync.Mutex
	var last time.Time
	return &peercred.Listener{Listener: ln, Policy: n.proxyUsers, Refused: func(uid int64, err error) {
		n.proxyRefused.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < refusalLogEvery {
			return
		}
		last = time.Now()
		n.log.Warn("proxy client refused: another local user (allow more with --proxy-users)", "uid", uid, "error", err, "refused_total", n.proxyRefused.Load())
	}}
}
