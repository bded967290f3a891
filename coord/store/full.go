package store

import (
	"errors"
	"strings"
	"syscall"
)

// sqliteFull is SQLite's primary result code SQLITE_FULL: a write failed because the disk (or the
// file system the database lives on) is full.
const sqliteFull = 13

// StorageFull reports whether err says the database's storage is full: SQLite's SQLITE_FULL (also
// what a write into a full file system gives), or ENOSPC from the file system directly. Nothing is
// wrong with the data: writes work again once space is freed.
func StorageFull(err error) bool {
	if err == nil {
		return false
	}
	var coded interface{ Code() int }
	if errors.As(err, &coded) && coded.Code()&0xff == sqliteFull {
		return true
	}
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	// The driver wraps some errors (a failed commit) in text only.
	return strings.Contains(err.Error(), "database or disk is full")
}
