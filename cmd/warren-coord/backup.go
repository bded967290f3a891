package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/warren-net/warren/coord/store"
)

const backupUsage = `usage: warren-coord backup FILE --data DIR

Writes a consistent copy of the server's database (DIR/warren.db) to FILE, whether
the server runs or not: SQLite's VACUUM INTO reads one snapshot while the server
goes on writing. The copy is checked (quick_check) before it appears under FILE;
an existing FILE is never replaced. The identity key (DIR/key.pem) is not in the
copy: keep a copy of it once, it does not change.

Restore: stop the server, copy FILE to DIR/warren.db (remove DIR/warren.db-wal and
DIR/warren.db-shm if they are there), start the server.
`

// backupTimeout bounds one backup; VACUUM INTO of a database of 100k nodes takes seconds.
const backupTimeout = 10 * time.Minute

// cmdBackup runs 'warren-coord backup FILE --data DIR'.
func cmdBackup(args []string, out io.Writer) error {
	fs, data := operatorFlags("backup", backupUsage)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	if *data == "" {
		return errors.New("backup: --data DIR is required")
	}
	if _, err := os.Stat(filepath.Join(*data, dbURLFile)); err == nil {
		return errors.New("backup: this server keeps its state in PostgreSQL (--db): back that up with pg_dump; copy DIR/key.pem separately")
	}
	ctx, cancel := context.WithTimeout(context.Background(), backupTimeout)
	defer cancel()
	if err := store.Backup(ctx, dbPath(*data), pos[0]); err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			return fmt.Errorf("%w\n%s", err, restoreRecipe(*data))
		}
		return err
	}
	_, err = fmt.Fprintf(out, "backed up %s to %s\n", dbPath(*data), pos[0])
	return err
}

// dbPath is the database file in data directory dir.
func dbPath(dir string) string { return filepath.Join(dir, "warren.db") }

// openError explains a failure to open the database in dir; a damaged database gets the restore steps.
func openError(dir string, err error) error {
	if errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("the database %s is damaged: %w\n%s", dbPath(dir), err, restoreRecipe(dir))
	}
	return fmt.Errorf("open database: %w", err)
}

// restoreRecipe tells the operator how to put a backup in place of the database in dir.
func restoreRecipe(dir string) string {
	db := dbPath(dir)
	return fmt.Sprintf(`To restore from a backup made with 'warren-coord backup FILE --data %[1]s':
  1. stop the server (it is not running if this message stopped it)
  2. keep the damaged file for inspection: mv %[2]s %[2]s.damaged; rm -f %[2]s-wal %[2]s-shm
  3. cp FILE %[2]s   (as the user the server runs as; mode 0600)
  4. start the server: warren-coord --data %[1]s ...
Nodes and networks created after the backup are gone; nodes log in again by themselves.`, dir, db)
}
