package peer

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/quic-go/quic-go"
)

// TestNoAnswer: the dial errors that send a node to TCP are those where the server never answered.
func TestNoAnswer(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{&quic.HandshakeTimeoutError{}, true},
		{&quic.IdleTimeoutError{}, true},
		{fmt.Errorf("dial: %w", &quic.TransportError{ErrorCode: quic.InternalError, ErrorMessage: "sendmsg: operation not permitted"}), true},
		{&quic.TransportError{ErrorCode: quic.InternalError, Remote: true}, false},
		{&quic.TransportError{ErrorCode: 0x100 + 42}, false}, // a TLS alert: our key check failed
		{&quic.ApplicationError{Remote: true, ErrorCode: 1}, false},
		{&quic.StatelessResetError{}, false},
		{errors.New("something else"), true},
	} {
		if got := noAnswer(c.err); got != c.want {
			t.Errorf("noAnswer(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
