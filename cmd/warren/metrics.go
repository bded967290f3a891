package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

// cmdMetrics runs `warren metrics`: the running node's Prometheus metrics from the local API, in the
// text exposition format, for a look by hand or a script (a scraper uses `warren up --metrics`).
func cmdMetrics(args []string) error {
	fs := newFlagSet("metrics", "metrics")
	state := stateFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) != 0 {
		fs.Usage()
		return errors.New("metrics: takes no arguments")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := localapi.NewClient(*state).Metrics(ctx)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	_, err = os.Stdout.Write(b)
	return err
}
