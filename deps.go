//go:build tools

package tools

import (
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/quic-go/quic-go"
	_ "github.com/things-go/go-socks5"
	_ "golang.org/x/crypto/argon2"
	_ "gvisor.dev/gvisor/pkg/tcpip/stack"
	_ "modernc.org/sqlite"
)
