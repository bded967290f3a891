package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// ErrCorrupt is returned (wrapped) by Open and Backup when SQLite finds the database damaged:
// "database disk image is malformed", "file is not a database", or a failed quick_check.
var ErrCorrupt = errors.New("database is corrupt")

// SQLite's primary result codes for a damaged file (the low byte of an extended code).
const (
	sqliteCorrupt = 11 // SQLITE_CORRUPT: database disk image is malformed
	sqliteNotADB  = 26 // SQLITE_NOTADB: file is not a database
)

// corrupt wraps err with ErrCorrupt when SQLite reported a damaged database; other errors pass as they are.
func corrupt(err error) error {
	var se interface{ Code() int }
	if err != nil && errors.As(err, &se) {
		if c := se.Code() & 0xff; c == sqliteCorrupt || c == sqliteNotADB {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return err
}

// quickCheck runs PRAGMA quick_check on db: nil when SQLite answers "ok", else an ErrCorrupt with the
// first problems it lists (at most 10).
func quickCheck(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `PRAGMA quick_check(10)`)
	if err != nil {
		return corrupt(fmt.Errorf("quick_check: %w", err))
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return corrupt(fmt.Errorf("quick_check: %w", err))
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return corrupt(fmt.Errorf("quick_check: %w", err))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: quick_check: %s", ErrCorrupt, strings.Join(problems, "; "))
	}
	return nil
}

// Backup writes a consistent copy of the database at src to dst while a server may be using it:
// SQLite's VACUUM INTO on a read-only connection copies one snapshot (WAL readers do not block the
// writer, nor it them), into a temporary file beside dst. The copy must pass quick_check; then it is
// linked into place, so dst appears whole or not at all. Backup refuses to replace an existing dst.
func Backup(ctx context.Context, src, dst string) error {
	srcAbs, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Stat(srcAbs); err != nil {
		return fmt.Errorf("backup: no database: %w", err)
	}
	dstAbs, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Lstat(dstAbs); err == nil {
		return fmt.Errorf("backup: %s exists; not replacing it (remove it or pick another name)", dst)
	}
	// The temporary file is made by us (mode 0600, the database's) and VACUUM INTO fills it: SQLite
	// writes into an existing file that is empty.
	tmpf, err := os.CreateTemp(filepath.Dir(dstAbs), "."+filepath.Base(dstAbs)+".tmp-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmp := tmpf.Name()
	tmpf.Close()
	defer os.Remove(tmp) // after a link, dst keeps the data
	if err := vacuumInto(ctx, srcAbs, tmp); err != nil {
		return err
	}
	if err := checkFile(ctx, tmp); err != nil {
		return fmt.Errorf("backup: the copy failed its check: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// A hard link fails if dst appeared meanwhile (rename would replace it); filesystems without hard
	// links get a rename after one more check.
	if err := os.Link(tmp, dstAbs); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("backup: %s exists; not replacing it", dst)
		}
		if _, serr := os.Lstat(dstAbs); serr == nil {
			return fmt.Errorf("backup: %s exists; not replacing it", dst)
		}
		if rerr := os.Rename(tmp, dstAbs); rerr != nil {
			return fmt.Errorf("backup: %w", errors.Join(err, rerr))
		}
	}
	return syncDir(filepath.Dir(dstAbs))
}

// vacuumInto copies the database at src into the empty file dst with VACUUM INTO.
func vacuumInto(ctx context.Context, src, dst string) error {
	db, err := sql.Open("sqlite", readOnlyDSN(src))
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", src, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// VACUUM INTO takes a file name, or a URI when the connection was opened with one (ours is):
	// escape the path as one, as dsn does.
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, fileURI(dst)); err != nil {
		return fmt.Errorf("backup: copy %s: %w", src, corrupt(err))
	}
	return nil
}

// checkFile opens the database file at path read-only and runs quick_check on it.
func checkFile(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	return quickCheck(ctx, db)
}

// readOnlyDSN opens path read-only, waiting for locks as the server's connection does.
func readOnlyDSN(abs string) string {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	return fileURI(abs) + "?" + q.Encode()
}

// fileURI is abs as a file: URI, escaped so that '?', '#' or '%' in it are not taken for parameters.
func fileURI(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: file:///C:/...
	}
	return (&url.URL{Scheme: "file", Path: p}).String()
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// syncDir makes a new directory entry durable; where directories cannot be synced (Windows) it is a no-op.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	d.Sync() // best effort: not every platform or filesystem supports it
	return nil
}
