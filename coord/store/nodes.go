package store

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/warren-net/warren/identity"
)

const nodeColumns = `n.key, n.name, n.ip_index, n.created_at, n.last_seen, n.ephemeral, n.tag, n.authkey, n.login_done`

// NodeByFingerprint returns the node whose key has fingerprint fp (identity.Fingerprint), as recorded
// at its last login; ErrNotFound if there is none.
func (s *Store) NodeByFingerprint(ctx context.Context, fp string) (Node, error) {
	n, err := s.scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes n WHERE n.fingerprint = ?`, fp))
	if err != nil {
		return Node{}, fmt.Errorf("node %s: %w", fp, err)
	}
	return n, nil
}

// UpsertNode registers the node with the given Ed25519 public key under name, or updates the
// last-seen time of a known one and marks it online (see MarkOffline). On first sight the node gets
// the lowest free host index (see Pools) and its name; later calls change neither (names are
// identities: see RenameNode). A new node has LoginDone false until CompleteLogin; its address is
// the lowest free host index outside the address quarantine (freed.go). It returns
// ErrPoolExhausted when a new node does not fit.
func (s *Store) UpsertNode(ctx context.Context, key []byte, name string) (Node, error) {
	return s.RegisterLogin(ctx, key, name, LoginOptions{})
}

// LoginOptions are what a login that needs no admission decision (no auth key to redeem) records
// with its registration, so that it writes the node once rather than three times (UpsertNode,
// SetEphemeral, CompleteLogin: one commit, one fsync on SQLite, instead of three).
type LoginOptions struct {
	Ephemeral bool // mark the node ephemeral (never unmarks one)
	Complete  bool // the login is admitted: LoginDone becomes true
}

// RegisterLogin is UpsertNode that also applies opts in the same write.
//
// A known node's login is one statement, which needs no writer lock. A new node's registration
// allocates its address, which must see every other registration, so it runs as a pipeline (one
// round trip under the lock on PostgreSQL): allocStatements inserts the node at the lowest free
// index unless it exists by now (another coord may have registered it meanwhile), and the update
// applies opts to whichever row is there.
func (s *Store) RegisterLogin(ctx context.Context, key []byte, name string, opts LoginOptions) (Node, error) {
	if len(key) != ed25519.PublicKeySize {
		return Node{}, fmt.Errorf("upsert node: key is %d bytes, want %d", len(key), ed25519.PublicKeySize)
	}
	if err := ValidNodeName(name); err != nil {
		return Node{}, err
	}
	now := s.now()
	fp := identity.Fingerprint(key)
	update := stmt{`UPDATE nodes SET last_seen = ?, offline_since = NULL, fingerprint = ?,
			ephemeral = CASE WHEN ? = 1 THEN 1 ELSE ephemeral END, login_done = CASE WHEN ? = 1 THEN 1 ELSE login_done END
		WHERE key = ?`,
		[]any{now.Unix(), fp, boolInt(opts.Ephemeral), boolInt(opts.Complete), key}}
	res, err := s.db.ExecContext(ctx, update.q, update.args...)
	if err != nil {
		return Node{}, fmt.Errorf("update node: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return Node{}, fmt.Errorf("update node: %w", err)
	} else if n == 0 {
		cutoff := now.Add(-time.Duration(s.quarantine.Load())).UnixMilli()
		changed, err := s.db.pipeline(ctx, append(allocStatements(cutoff, key, name, now.Unix(), fp, opts.Ephemeral, opts.Complete, s.maxIndex), update)...)
		if err != nil {
			return Node{}, fmt.Errorf("register node: %w", err)
		}
		if changed[len(changed)-1] == 0 {
			return Node{}, ErrPoolExhausted // not there, and not inserted
		}
	}
	n, err := s.Node(ctx, key)
	if err != nil {
		return Node{}, fmt.Errorf("read node: %w", err)
	}
	return n, nil
}

// Node returns the node with the given key, or an error wrapping ErrNotFound.
func (s *Store) Node(ctx context.Context, key []byte) (Node, error) {
	n, err := s.scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes n WHERE n.key = ?`, key))
	if err != nil {
		return Node{}, fmt.Errorf("node %x: %w", key, err)
	}
	return n, nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// scanNode reads nodeColumns, plus extra trailing columns into extra. sql.ErrNoRows becomes
// ErrNotFound.
func (s *Store) scanNode(r scanner, extra ...any) (Node, error) {
	var n Node
	var idx, created, seen int64
	if err := r.Scan(append([]any{&n.Key, &n.Name, &idx, &created, &seen, &n.Ephemeral, &n.Tag, &n.AuthKeyID, &n.LoginDone}, extra...)...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Node{}, ErrNotFound
		}
		return Node{}, err
	}
	if idx < 1 || idx > s.maxIndex {
		return Node{}, fmt.Errorf("node %x has host index %d outside the pools", n.Key, idx)
	}
	n.IPv4, n.IPv6 = addIndex(s.pools.V4.Addr(), idx), addIndex(s.pools.V6.Addr(), idx)
	n.CreatedAt, n.LastSeen = time.Unix(created, 0).UTC(), time.Unix(seen, 0).UTC()
	return n, nil
}

// addIndex returns base+i. Pools.validate guarantees that the sum stays inside the pool.
func addIndex(base netip.Addr, i int64) netip.Addr {
	if base.Is4() {
		b := base.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(i)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := base.As16()
	carry := uint64(i)
	for j := 15; j >= 0 && carry != 0; j-- {
		sum := uint64(b[j]) + carry&0xff
		b[j] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	return netip.AddrFrom16(b)
}
