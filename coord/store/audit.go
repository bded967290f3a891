package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warren-net/warren/identity"
)

// The audit log records administrative actions — the operator's (authkey create, block add, node
// remove, ...) and, through the same method, network owners' — one row each: when, who, what, on
// what, and free-form details. It is bounded: every insert prunes entries older than the retention
// age and all but the newest retention count (SetAuditRetention; the server records its settings in
// the database, so tools that write on the data directory honour them too).

// Defaults for the audit log's retention.
const (
	DefaultAuditKeep   = 10000
	DefaultAuditMaxAge = 90 * 24 * time.Hour
)

// Size limits of an audit entry's fields (longer values are cut, on a rune boundary, with "…").
const (
	maxAuditField  = 256
	maxAuditDetail = 2048
)

// AuditEntry is one administrative action.
type AuditEntry struct {
	ID     int64     // assigned by Audit; increases with every entry
	Time   time.Time // zero = now; stored with millisecond precision
	Actor  string    // who: OperatorActor(uid) or NodeActor(name, key)
	Action string    // what, dotted: "node.remove", "block.add", "network.kick", ...; required
	Target string    // on what: a node, network, prefix or key ID
	Detail string    // anything else worth keeping; never secrets
}

// OperatorActor names the server's operator, by the uid that ran the command (-1 = unknown).
func OperatorActor(uid int) string {
	if uid < 0 {
		return "operator"
	}
	return "operator uid=" + strconv.Itoa(uid)
}

// NodeActor names a node acting as a network owner: "node name(KEYPREFIX)" (identity.Label), by its
// name and short key (as listings show it).
func NodeActor(name string, key []byte) string { return "node " + identity.Label(name, key) }

// Audit appends e to the audit log and prunes it to the retention settings, in one transaction.
//
//	st.Audit(ctx, store.AuditEntry{Actor: store.NodeActor(ownerName, owner), Action: "network.kick", Target: net, Detail: "node " + name})
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	if e.Action == "" {
		return errors.New("audit: no action")
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	defer tx.Rollback()
	// RETURNING rather than LastInsertId: PostgreSQL's driver has no last insert ID.
	var id int64
	err = tx.QueryRowContext(ctx, `INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		e.Time.UnixMilli(), clip(e.Actor, maxAuditField), clip(e.Action, maxAuditField), clip(e.Target, maxAuditField), clip(e.Detail, maxAuditDetail)).Scan(&id)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	keep, maxAge, err := auditRetention(ctx, tx)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	// IDs increase by one per entry (AUTOINCREMENT; a rolled-back insert takes its number back), so
	// the newest keep entries are those above id-keep.
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit WHERE id <= ? OR at < ?`, id-int64(keep), time.Now().Add(-maxAge).UnixMilli()); err != nil {
		return fmt.Errorf("audit %s: prune: %w", e.Action, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-len("…")]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// SetAuditRetention records how much of the audit log to keep: at most keep entries (≥ 1) and none
// older than maxAge (> 0). The next Audit prunes to it.
func (s *Store) SetAuditRetention(ctx context.Context, keep int, maxAge time.Duration) error {
	if keep < 1 || maxAge <= 0 {
		return fmt.Errorf("audit retention: want at least 1 entry and a positive age, got %d and %v", keep, maxAge)
	}
	if err := s.SetSetting(ctx, "audit_keep", strconv.Itoa(keep)); err != nil {
		return err
	}
	return s.SetSetting(ctx, "audit_max_age", strconv.FormatInt(int64(maxAge/time.Second), 10))
}

func auditRetention(ctx context.Context, tx *txn) (keep int, maxAge time.Duration, err error) {
	keep, maxAge = DefaultAuditKeep, DefaultAuditMaxAge
	var k, a sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT (SELECT value FROM settings WHERE name = 'audit_keep'), (SELECT value FROM settings WHERE name = 'audit_max_age')`).
		Scan(&k, &a)
	if err != nil {
		return 0, 0, fmt.Errorf("read audit retention: %w", err)
	}
	if n, err := strconv.Atoi(k.String); k.Valid && err == nil && n >= 1 {
		keep = n
	}
	if n, err := strconv.ParseInt(a.String, 10, 64); a.Valid && err == nil && n >= 1 {
		maxAge = time.Duration(n) * time.Second
	}
	return keep, maxAge, nil
}

// AuditLog returns the newest limit entries (at most; limit ≤ 0 means all) at or after since (zero =
// any time), oldest first.
func (s *Store) AuditLog(ctx context.Context, since time.Time, limit int) ([]AuditEntry, error) {
	q := `SELECT id, at, actor, action, target, detail FROM audit WHERE at >= ? ORDER BY id DESC`
	args := []any{int64(0)}
	if !since.IsZero() {
		args[0] = since.UnixMilli()
	}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		e.Time = time.UnixMilli(at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Setting returns a server setting recorded with SetSetting, and whether it is set.
func (s *Store) Setting(ctx context.Context, name string) (string, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	return v, true, nil
}

// SetSetting records a server setting (for tools that work on the data directory), replacing an
// older value. The names pool4 and pool6 belong to Open.
func (s *Store) SetSetting(ctx context.Context, name, value string) error {
	if name == "pool4" || name == "pool6" || strings.TrimSpace(name) == "" {
		return fmt.Errorf("set setting: %q is reserved", name)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value); err != nil {
		return fmt.Errorf("set setting %s: %w", name, err)
	}
	return nil
}
