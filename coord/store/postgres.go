package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// IsPostgres reports whether location names a PostgreSQL database (a postgres:// or postgresql://
// URL) rather than a SQLite file.
func IsPostgres(location string) bool {
	return strings.HasPrefix(location, "postgres://") || strings.HasPrefix(location, "postgresql://")
}

// redact returns a PostgreSQL URL without its password, for messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}

// poolConns is how many connections a store opens to PostgreSQL at most, and keeps while idle
// (up to five minutes). A connection closed after a burst and opened for the next costs the server
// a new backend process with cold caches, and the statements are prepared again: with four kept of
// sixteen, two coords logging in 10,000 nodes spent most of their time connecting (login 72–144 s;
// 42 s with all kept).
const poolConns = 16

// openPostgres connects to the PostgreSQL database dsn (pgx through database/sql). Any number of
// Stores, in any number of processes, may share it: every transaction takes the store's advisory
// lock (see dbx.BeginTx).
func openPostgres(dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", redact(dsn), err)
	}
	// The store's statements are all small. PostgreSQL's JIT compiles a plan whose estimated cost
	// passes jit_above_cost, and the allocator's plan (freed.go) does on a new table: it spent 326
	// ms compiling what ran in 0.4 ms, under the writer lock. The DSN may still turn it on.
	if _, ok := cfg.RuntimeParams["jit"]; !ok {
		cfg.RuntimeParams["jit"] = "off"
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(poolConns)
	db.SetMaxIdleConns(poolConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", redact(dsn), err)
	}
	return &Store{db: &dbx{DB: db, d: dialect{pg: true, cache: new(sync.Map)}}, name: redact(dsn), dsn: dsn}, nil
}

// Postgres reports whether the store is on PostgreSQL (shared by several coords) rather than SQLite.
func (s *Store) Postgres() bool { return s.db.d.pg }

// schemaVersion reads the number of migrations applied: SQLite's user_version, or on PostgreSQL the
// one row of table schema_version (created on first use; the caller's transaction holds the writer
// lock, so two coords starting at once do not both create it).
func (s *Store) schemaVersion(tx *txn) (int, error) {
	var v int
	if !s.db.d.pg {
		err := tx.QueryRow(`PRAGMA user_version`).Scan(&v)
		return v, err
	}
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return 0, err
	}
	err := tx.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// setSchemaVersion records v as the number of migrations applied.
func (s *Store) setSchemaVersion(tx *txn, v int) error {
	if !s.db.d.pg {
		_, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, v))
		return err
	}
	if _, err := tx.Exec(`DELETE FROM schema_version`); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO schema_version (version) VALUES (?)`, v)
	return err
}
