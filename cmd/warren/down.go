package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

// cmdDown asks the running node to log out and stop, and waits until it has.
func cmdDown(args []string) error {
	fs := newFlagSet("down", "down [--state DIR]")
	state := stateFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("down: unexpected argument %q", pos[0])
	}
	c := localapi.NewClient(*state)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := c.Down(ctx)
	if err != nil {
		return fmt.Errorf("down: %w", err)
	}
	if rep.Error != "" {
		fmt.Println("warning:", rep.Error)
	}
	// The node stops by itself now; wait until its API is gone so that scripts can rely on it.
	for {
		_, err := c.Status(ctx)
		if errors.Is(err, localapi.ErrNotRunning) {
			break
		}
		if ctx.Err() != nil {
			return errors.New("down: the node did not stop within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rep.LoggedOut {
		fmt.Println("logged out (the ephemeral node was removed from its networks); node stopped")
	} else {
		fmt.Println("node stopped")
	}
	return nil
}
