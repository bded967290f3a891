package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

// cmdRename runs `warren rename NEWNAME`: the running node asks the coordination server for the new
// name. Peers see it at once (NEWNAME.warren), and access rules keep applying to the node (the
// server binds them to its key). The name is refused if a node that shares a network with this one
// has it. Restarting with another --name does not rename a node: this is the way.
func cmdRename(args []string) error {
	fs := newFlagSet("rename", "rename NEWNAME")
	state := stateFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("rename: want the new name")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := localapi.NewClient(*state).Rename(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	fmt.Printf("this node is now %s (%s.warren to its peers)\n", rep.Name, rep.Name)
	return nil
}
