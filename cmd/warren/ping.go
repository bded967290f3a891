package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

func cmdPing(args []string) error {
	fs := newFlagSet("ping PEER [-c N]", "ping PEER [-c N] [-i INTERVAL] [-W TIMEOUT]")
	state := stateFlag(fs)
	count := fs.Int("c", 4, "stop after `N` replies or losses (0 = until interrupted)")
	interval := fs.Duration("i", time.Second, "wait `INTERVAL` between requests")
	timeout := fs.Duration("W", 2*time.Second, "wait up to `TIMEOUT` for each reply")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("ping: want one peer name or virtual IP")
	}
	target := pos[0]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := localapi.NewClient(*state)
	var sent, got int
	var sum, minRTT, maxRTT float64
	minRTT = math.Inf(1)
	for seq := 1; *count == 0 || seq <= *count; seq++ {
		if ctx.Err() != nil {
			break
		}
		sent++
		rep, err := c.Ping(ctx, target, uint16(seq), *timeout)
		switch {
		case errors.Is(err, localapi.ErrNotRunning):
			return err
		case err != nil:
			fmt.Printf("no reply from %s: icmp_seq=%d (%v)\n", target, seq, err)
		default:
			got++
			sum += rep.RTTms
			minRTT, maxRTT = math.Min(minRTT, rep.RTTms), math.Max(maxRTT, rep.RTTms)
			who := rep.IP.String()
			if rep.Name != "" {
				who = fmt.Sprintf("%s (%s)", rep.Name, rep.IP)
			}
			fmt.Printf("64 bytes from %s: icmp_seq=%d time=%.2f ms path=%s\n", who, seq, rep.RTTms, rep.Path)
		}
		if *count == 0 || seq < *count {
			select {
			case <-ctx.Done():
			case <-time.After(*interval):
			}
		}
	}
	fmt.Printf("\n--- %s ping statistics ---\n%d sent, %d received, %.0f%% loss\n", target, sent, got, 100*float64(sent-got)/float64(max(sent, 1)))
	if got > 0 {
		fmt.Printf("rtt min/avg/max = %.2f/%.2f/%.2f ms\n", minRTT, sum/float64(got), maxRTT)
	}
	if got == 0 {
		return fmt.Errorf("no replies from %s", target)
	}
	return nil
}
