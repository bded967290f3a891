package node

import (
	"errors"
	"fmt"
	"testing"

	"github.com/warren-net/warren/control"
)

// A login refused for the server's passing trouble (rate limited, storage full, an internal error)
// is retried (and a node with a cache may start from it); one that needs a person is final.
func TestIsRefusal(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("login: %w", &control.Error{Code: control.CodeRateLimited}), false},
		{fmt.Errorf("login: %w", &control.Error{Code: control.CodeStorageFull}), false},
		{fmt.Errorf("login: %w", &control.Error{Code: control.CodeInternal}), false},
		{&control.Error{Code: control.CodeBanned}, true},
		{&control.Error{Code: control.CodeInvalid}, true},
		{&control.Error{Code: control.CodeNameTaken}, true},
		{fmt.Errorf("login: %w", &control.Error{Code: control.CodeBlocked}), true},
		{&control.Error{Code: control.CodeAuthKey}, true},
		{errors.New("timeout: no recent network activity"), false},
	} {
		if got := isRefusal(c.err); got != c.want {
			t.Errorf("isRefusal(%v) = %v, want %v", c.err, got, c.want)
		}
		if got := canStartFromCache(c.err); got == c.want {
			t.Errorf("canStartFromCache(%v) = %v, want %v", c.err, got, !c.want)
		}
	}
}
