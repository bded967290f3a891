package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ListenApplication is the application_name of the LISTEN connection (pg_stat_activity shows it;
// tests terminate it there).
const ListenApplication = "warren-listen"

// Listen calls wake whenever events may have been published: on every notification on
// NotifyChannel, after every (re)connection of its LISTEN connection (reconnected = true: a
// notification may have been lost meanwhile), and at least every poll interval. The caller reads
// EventsAfter its last ID each time. It returns when ctx ends. A dropped connection is redialled with
// backoff (up to 5s); onError is told each failure.
//
// On SQLite, where there is no NOTIFY, it just calls wake every poll interval.
func (s *Store) Listen(ctx context.Context, poll time.Duration, wake func(reconnected bool), onError func(error)) {
	if !s.db.d.pg {
		t := time.NewTicker(poll)
		defer t.Stop()
		wake(true)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				wake(false)
			}
		}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, poll, wake, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		onError(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listenOnce holds one LISTEN connection until it fails or ctx ends; connected is called once it
// listens.
func (s *Store) listenOnce(ctx context.Context, poll time.Duration, wake func(bool), connected func()) error {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	cfg.RuntimeParams["application_name"] = ListenApplication
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(dctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	wake(true)
	for {
		wctx, cancel := context.WithTimeout(ctx, poll)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			wake(false)
		case errors.Is(err, context.DeadlineExceeded):
			// The poll interval passed quietly; pgx keeps the connection usable after a timeout.
			wake(false)
		default:
			return fmt.Errorf("listen: %w", err)
		}
	}
}
