//go:build !linux

package node

import (
	"net"
	"os"

	"github.com/warren-net/warren/tun"
)

func checkPeer(conn *net.UnixConn) error { return nil }

// receiveTUN fails: attached devices are Linux only.
func receiveTUN(conn *net.UnixConn) (*os.File, error) { return nil, tun.ErrUnsupported }
