package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/coord/abuse"
)

// loginLimitFlags are the login rate limit flags of the coordination server and the standalone relay
// (same names, defaults and meaning: package abuse's Guard enforces both).
type loginLimitFlags struct {
	rateIP, rateKey   *float64
	burstIP, burstKey *int
}

func addLoginLimitFlags(fs *flag.FlagSet) loginLimitFlags {
	return loginLimitFlags{
		rateIP:   fs.Float64("login-rate-ip", float64(abuse.DefaultLoginRateIP), "logins per second allowed per source address (IPv6: per /64; loopback exempt; 0 = no limit)"),
		burstIP:  fs.Int("login-burst-ip", abuse.DefaultLoginBurstIP, "logins one source address may make at once before --login-rate-ip applies"),
		rateKey:  fs.Float64("login-rate-key", float64(abuse.DefaultLoginRateKey), "logins per second allowed per node identity (0 = no limit)"),
		burstKey: fs.Int("login-burst-key", abuse.DefaultLoginBurstKey, "logins one identity may make at once before --login-rate-key applies"),
	}
}

// config validates the flags and returns them as a Guard's limits.
func (f loginLimitFlags) config() (abuse.GuardConfig, error) {
	if *f.rateIP < 0 || *f.rateKey < 0 || *f.burstIP < 1 || *f.burstKey < 1 {
		return abuse.GuardConfig{}, errors.New("--login-rate-* must be >= 0 and --login-burst-* >= 1")
	}
	return abuse.GuardConfig{LoginRateIP: loginLimit(*f.rateIP), LoginBurstIP: *f.burstIP,
		LoginRateKey: loginLimit(*f.rateKey), LoginBurstKey: *f.burstKey}, nil
}

// loginLimit maps the flag's 0 (no limit) to rate.Inf.
func loginLimit(perSecond float64) rate.Limit {
	if perSecond == 0 {
		return rate.Inf
	}
	return rate.Limit(perSecond)
}

// waitForSignal blocks until SIGINT or SIGTERM; on SIGHUP meanwhile it runs reloadBlockList (the
// server's or the relay's ReloadBlockList).
func waitForSignal(log hclog.Logger, reloadBlockList func() error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := reloadBlockList(); err != nil {
				log.Warn("block list not reloaded; keeping the old one", "error", err)
			}
		}
	}
}
