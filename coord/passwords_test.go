package coord

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/testkit"
)

// TestPasswordGuessesLimited: a node that keeps guessing a network's password is cut off after a
// handful of tries — even the right password waits then — while other nodes join as usual.
func TestPasswordGuessesLimited(t *testing.T) {
	srv := startServer(t)
	owner, guesser, other := dial(t, srv), dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	guesser.login(t, "guesser")
	other.login(t, "other")
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Password: "correct horse"})

	// Wrong guesses until one is refused with a second or more to wait. However slow each argon2id
	// run (a token comes back every 1/passwordRateKey seconds meanwhile), no more get through than
	// the burst and what came back.
	start, guesses := time.Now(), 0
	for {
		rep := guesser.request(t, control.Request{ID: nextID(), Op: control.OpJoin, Network: "lan", Password: fmt.Sprint("guess", guesses)})
		if rep.Code == control.CodeRateLimited && strings.Contains(rep.Error, "try again in 2s") {
			break
		}
		switch {
		case rep.Code == control.CodeWrongPassword:
			guesses++
		case rep.Code != control.CodeRateLimited:
			t.Fatalf("a wrong guess: %+v", rep)
		}
		if most := passwordBurstKey + int(time.Since(start).Seconds()*float64(passwordRateKey)) + 1; guesses > most {
			t.Fatalf("%d wrong guesses in %v, want at most %d", guesses, time.Since(start), most)
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("after %d guesses in %v, none refused for long", guesses, time.Since(start))
		}
	}
	if guesses < passwordBurstKey {
		t.Fatalf("refused after %d wrong guesses, want the burst of %d first", guesses, passwordBurstKey)
	}
	// Within the second of the refusal the right password waits too.
	rep := guesser.do(t, control.CodeRateLimited, control.Request{Op: control.OpJoin, Network: "lan", Password: "correct horse"})
	if !strings.Contains(rep.Error, "too many password attempts; try again in") {
		t.Errorf("refusal %q does not say when to try again", rep.Error)
	}
	other.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "correct horse"})

	// A member joining again, and a network without a password, cost no password work.
	other.do(t, "", control.Request{Op: control.OpJoin, Network: "lan", Password: "anything"})
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "open", Open: true})
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "open"})

	// Once a token is back (1/passwordRateKey seconds), the right password gets in; refused tries
	// take no token.
	testkit.Eventually(t, 30*time.Second, func() bool {
		rep := guesser.request(t, control.Request{ID: nextID(), Op: control.OpJoin, Network: "lan", Password: "correct horse"})
		if rep.Code != "" && rep.Code != control.CodeRateLimited {
			t.Fatalf("join with the right password: %+v", rep)
		}
		return rep.Code == ""
	}, "the right password is still refused")
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
