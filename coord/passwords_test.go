package coord

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
)

// TestPasswordGuessesLimited: a node that keeps guessing a network's password is cut off after a
// handful of tries — even the right password waits then — while other nodes join as usual.
func TestPasswordGuessesLimited(t *testing.T) {
	// The buckets fill by a clock the test moves, so that however slow each argon2id run on a
	// loaded machine, no token comes back until the test says so.
	var offset atomic.Int64
	base := time.Now()
	srv := startServerWith(t, filepath.Join(t.TempDir(), "w.db"), func(c *Config) {
		c.clock = func() time.Time { return base.Add(time.Duration(offset.Load())) }
	})
	owner, guesser, other := dial(t, srv), dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	guesser.login(t, "guesser")
	other.login(t, "other")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Password: "correct horse"})

	// The burst of wrong guesses gets through; the next is refused, and says when to try again.
	for i := range passwordBurstKey {
		guesser.do(t, control.CodeWrongPassword, control.Request{Op: control.OpJoin, Network: "lan", Password: fmt.Sprint("guess", i)})
	}
	rep := guesser.do(t, control.CodeRateLimited, control.Request{Op: control.OpJoin, Network: "lan", Password: "one more guess"})
	if !strings.Contains(rep.Error, "try again in 2s") {
		t.Fatalf("refusal after the burst %q, want it to say 2s (one token every 1/passwordRateKey seconds)", rep.Error)
	}
	// Until a token is back the right password waits too.
	rep = guesser.do(t, control.CodeRateLimited, control.Request{Op: control.OpJoin, Network: "lan", Password: "correct horse"})
	if !strings.Contains(rep.Error, "too many password attempts; try again in") {
		t.Errorf("refusal %q does not say when to try again", rep.Error)
	}
	other.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "correct horse"})

	// A member joining again, and a network without a password, cost no password work.
	other.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "anything"})
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "open", Open: true})
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "open"})

	// Once a token is back (1/passwordRateKey seconds), the right password gets in; refused tries
	// took no token.
	offset.Add(int64(time.Duration(float64(time.Second) / float64(passwordRateKey))))
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "correct horse"})
}

// TestPasswordWorkBounded: no more than the slots' worth of argon2id runs at once, and a caller
// that cannot get a slot gives up when its context ends.
func TestPasswordWorkBounded(t *testing.T) {
	srv := startServer(t)
	slots := cap(srv.passwords.slots)
	release := make(chan struct{})
	running := make(chan struct{}, slots+1)
	done := make(chan error, slots)
	for range slots {
		go func() {
			done <- srv.passwordWork(context.Background(), nil, netip.Addr{}, func() error {
				running <- struct{}{}
				<-release
				return nil
			})
		}()
	}
	for range slots {
		<-running
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := srv.passwordWork(ctx, nil, netip.Addr{}, func() error { t.Error("ran beyond the slots"); return nil })
	if err == nil || ctx.Err() == nil {
		t.Fatalf("got %v while every slot was taken", err)
	}
	close(release)
	for range slots {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
