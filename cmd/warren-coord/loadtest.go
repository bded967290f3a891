package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/coord/loadtest"
)

const loadtestUsage = `usage: warren-coord loadtest --coord HOST:PORT[,HOST:PORT...] --nodes N [flags]

Simulates N nodes against running coordination servers: real identity keys and the
real control protocol, no netstack and no peer links. Node i logs in to the i-th
server given (round robin), so the nodes split between the servers. Phases: all
log in; networks of --networks-of members are created and joined (open networks,
or with --password, so that joins pay the server's password hash);
--events endpoint changes on random nodes are timed until each peer reads them;
then, with --churn, nodes drop and log in again for --churn-for. The nodes are
ephemeral and log out at the end, so the server forgets them.

Progress goes to stderr; one JSON line of figures to stdout. For a server on this
machine it includes the process's RSS, peak RSS and CPU seconds (from /proc).

Run it only against your own servers: it is load. A coord allows 1024 logins in
flight and exempts loopback from its per-address login rate; from elsewhere raise
--login-rate-ip/--login-burst-ip on the server, or the run measures the limits.

flags:
`

// cmdLoadtest runs 'warren-coord loadtest ...' and prints its result as one JSON line.
func cmdLoadtest(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("warren-coord loadtest", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), loadtestUsage); fs.PrintDefaults() }
	coords := fs.String("coord", "", "coordination server `addresses`, comma-separated (HOST:PORT, optionally #SHA256:… to pin its key)")
	var cfg loadtest.Config
	fs.IntVar(&cfg.Nodes, "nodes", 1000, "simulated `nodes`")
	fs.IntVar(&cfg.NetworksOf, "networks-of", 10, "`members` per network")
	fs.IntVar(&cfg.Events, "events", 200, "endpoint changes to time (fan-out)")
	fs.Float64Var(&cfg.EventRate, "event-rate", 50, "events per `second`")
	fs.Float64Var(&cfg.Churn, "churn", 0, "nodes per `second` that drop and log in again in the churn phase (0 = none)")
	fs.DurationVar(&cfg.ChurnFor, "churn-for", 10e9, "how `long` the churn phase lasts")
	fs.StringVar(&cfg.Password, "password", "", "protect the networks with this `password`, so that each join pays the server's password hash (default: open networks)")
	fs.DurationVar(&cfg.Idle, "idle", 0, "end with every node connected and idle this `long`, and report each local coord's CPU per node per second (0 = skip)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 128, "logins and requests in flight")
	fs.IntVar(&cfg.Sockets, "sockets", 32, "UDP `sockets` the nodes share")
	fs.DurationVar(&cfg.Timeout, "timeout", 120e9, "how `long` each phase may take")
	logLevel := fs.String("log-level", "info", "progress log `level` on stderr: trace, debug, info, warn, error, off")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("loadtest: unexpected argument %q", fs.Arg(0))
	}
	if *coords == "" {
		return fmt.Errorf("loadtest: --coord is required")
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("loadtest: --log-level %q: want one of trace, debug, info, warn, error, off", *logLevel)
	}
	for _, c := range strings.Split(*coords, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.Coords = append(cfg.Coords, c)
		}
	}
	cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "loadtest", Level: level, Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	return json.NewEncoder(stdout).Encode(res)
}
