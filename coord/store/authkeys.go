package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Auth keys let a node join a network without its password: an operator creates one for a network
// (CreateAuthKey), hands it to a CI job or container, and the node presents it at login
// (RedeemAuthKey). A key looks like
//
//	warren-auth-<id>-<secret>
//
// with a 12-hex-digit public ID (shown in listings and logs, used to revoke) and a 256-bit random
// secret. Only the SHA-256 hash of the whole key is stored: the key has full entropy, so a fast hash
// is enough (unlike passwords, which need argon2id) and a copy of the database does not reveal it.

var (
	// ErrAuthKeyInvalid is returned by RedeemAuthKey for a malformed or unknown key.
	ErrAuthKeyInvalid = errors.New("invalid auth key")
	// ErrAuthKeyExpired is returned by RedeemAuthKey when the key's expiry has passed.
	ErrAuthKeyExpired = errors.New("auth key expired")
	// ErrAuthKeyRevoked is returned by RedeemAuthKey when the key was revoked.
	ErrAuthKeyRevoked = errors.New("auth key revoked")
	// ErrAuthKeyUsed is returned by RedeemAuthKey when a single-use key was already used.
	ErrAuthKeyUsed = errors.New("auth key already used (it is single-use)")
)

const (
	authKeyPrefix = "warren-auth-"
	authKeyIDLen  = 12 // hex digits
	authKeySecret = 32 // bytes of randomness
)

// AuthKey is a stored auth key: everything about it but the key itself.
type AuthKey struct {
	ID         string // public part of the key
	Network    string // the network it joins
	Reusable   bool   // may be used by any number of nodes; otherwise by one
	Ephemeral  bool   // nodes that join with it are ephemeral
	Tag        string // recorded on nodes that join with it; "" = none
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero = never
	RevokedAt  time.Time // zero = not revoked
	Uses       int64     // how many nodes redeemed it
	LastUsedAt time.Time // zero = never used
}

// State sums the key up at time now: "revoked", "expired", "used" (a single-use key that was
// redeemed) or "valid", in that order of precedence.
func (k AuthKey) State(now time.Time) string {
	switch {
	case !k.RevokedAt.IsZero():
		return "revoked"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return "expired"
	case !k.Reusable && k.Uses > 0:
		return "used"
	}
	return "valid"
}

// AuthKeyOptions describe a new auth key.
type AuthKeyOptions struct {
	Network   string // required; must exist
	Reusable  bool
	Ephemeral bool
	Tag       string        // "" or a valid tag, see ValidTag
	Expiry    time.Duration // 0 = never expires
}

// CreateAuthKey creates an auth key and returns its record and the key itself, which is not stored
// and cannot be shown again. It returns an error wrapping ErrNotFound if the network does not exist.
func (s *Store) CreateAuthKey(ctx context.Context, o AuthKeyOptions) (AuthKey, string, error) {
	if err := ValidNetworkName(o.Network); err != nil {
		return AuthKey{}, "", err
	}
	if o.Tag != "" {
		if err := ValidTag(o.Tag); err != nil {
			return AuthKey{}, "", err
		}
	}
	if o.Expiry < 0 {
		return AuthKey{}, "", fmt.Errorf("create auth key: negative expiry %v", o.Expiry)
	}
	buf := make([]byte, authKeyIDLen/2+authKeySecret)
	if _, err := rand.Read(buf); err != nil {
		return AuthKey{}, "", fmt.Errorf("create auth key: %w", err)
	}
	id := hex.EncodeToString(buf[:authKeyIDLen/2])
	secret := authKeyPrefix + id + "-" + hex.EncodeToString(buf[authKeyIDLen/2:])
	hash := sha256.Sum256([]byte(secret))
	now := time.Now()
	k := AuthKey{ID: id, Network: o.Network, Reusable: o.Reusable, Ephemeral: o.Ephemeral, Tag: o.Tag,
		CreatedAt: time.Unix(now.Unix(), 0).UTC()}
	var expires int64
	if o.Expiry > 0 {
		// Rounded up to the second: a key never expires before its time.
		at := now.Add(o.Expiry)
		expires = at.Unix()
		if at.Nanosecond() > 0 {
			expires++
		}
		k.ExpiresAt = time.Unix(expires, 0).UTC()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return AuthKey{}, "", fmt.Errorf("create auth key: %w", err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM networks WHERE name = ?`, o.Network).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return AuthKey{}, "", fmt.Errorf("network %q: %w", o.Network, ErrNotFound)
	}
	if err != nil {
		return AuthKey{}, "", fmt.Errorf("create auth key: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO authkeys (id, hash, network, reusable, ephemeral, tag, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, hash[:], o.Network, o.Reusable, o.Ephemeral, o.Tag, k.CreatedAt.Unix(), expires); err != nil {
		return AuthKey{}, "", fmt.Errorf("create auth key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return AuthKey{}, "", fmt.Errorf("create auth key: %w", err)
	}
	return k, secret, nil
}

const authKeyColumns = `id, network, reusable, ephemeral, tag, created_at, expires_at, revoked_at, uses, last_used_at`

func scanAuthKey(r scanner, extra ...any) (AuthKey, error) {
	var k AuthKey
	var created, expires, revoked, lastUsed int64
	if err := r.Scan(append([]any{&k.ID, &k.Network, &k.Reusable, &k.Ephemeral, &k.Tag, &created, &expires, &revoked, &k.Uses, &lastUsed}, extra...)...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return AuthKey{}, ErrNotFound
		}
		return AuthKey{}, err
	}
	k.CreatedAt = time.Unix(created, 0).UTC()
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt = unixOrZero(expires), unixOrZero(revoked), unixOrZero(lastUsed)
	return k, nil
}

func unixOrZero(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// AuthKeys lists every auth key, oldest first (then by ID).
func (s *Store) AuthKeys(ctx context.Context) ([]AuthKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+authKeyColumns+` FROM authkeys`)
	if err != nil {
		return nil, fmt.Errorf("list auth keys: %w", err)
	}
	defer rows.Close()
	out := []AuthKey{}
	for rows.Next() {
		k, err := scanAuthKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list auth keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list auth keys: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// RevokeAuthKey revokes the key with the given ID: later logins with it are refused. Nodes that
// already joined with it stay. Revoking a revoked key changes nothing. It returns an error wrapping
// ErrNotFound for an unknown ID.
func (s *Store) RevokeAuthKey(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE authkeys SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END WHERE id = ?`,
		time.Now().Unix(), id)
	if err != nil {
		return fmt.Errorf("revoke auth key %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("revoke auth key %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("auth key %q: %w", id, ErrNotFound)
	}
	return nil
}

// parseAuthKey returns the ID of a well-formed key.
func parseAuthKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, authKeyPrefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "-")
	if !ok || len(id) != authKeyIDLen || len(secret) != 2*authKeySecret || !isLowerHex(id) || !isLowerHex(secret) {
		return "", false
	}
	return id, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// RedeemAuthKey lets the registered node with the given identity key join the network of an auth
// key, in one transaction: it checks the key, counts the use, adds the membership and records the
// key's ID and tag on the node (and makes it ephemeral if the key is). It returns the key and
// whether this call redeemed it: a node that redeemed the same key before gets (key, false, nil) and
// nothing changes, whatever the key's state now, so a node may present its key again at every login.
//
// It fails with ErrAuthKeyInvalid, ErrAuthKeyRevoked, ErrAuthKeyExpired (checked against now) or
// ErrAuthKeyUsed, in that order, and with an error wrapping ErrNotFound if the node is not
// registered.
func (s *Store) RedeemAuthKey(ctx context.Context, node []byte, key string, now time.Time, lim Limits) (AuthKey, bool, error) {
	id, ok := parseAuthKey(key)
	if !ok {
		return AuthKey{}, false, ErrAuthKeyInvalid
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return AuthKey{}, false, fmt.Errorf("redeem auth key: %w", err)
	}
	defer tx.Rollback()
	var hash []byte
	k, err := scanAuthKey(tx.QueryRowContext(ctx, `SELECT `+authKeyColumns+`, hash FROM authkeys WHERE id = ?`, id), &hash)
	if errors.Is(err, ErrNotFound) {
		return AuthKey{}, false, ErrAuthKeyInvalid
	}
	if err != nil {
		return AuthKey{}, false, fmt.Errorf("redeem auth key: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 {
		return AuthKey{}, false, ErrAuthKeyInvalid
	}
	var had string
	err = tx.QueryRowContext(ctx, `SELECT authkey FROM nodes WHERE key = ?`, node).Scan(&had)
	if errors.Is(err, sql.ErrNoRows) {
		return AuthKey{}, false, fmt.Errorf("redeem auth key: node: %w", ErrNotFound)
	}
	if err != nil {
		return AuthKey{}, false, fmt.Errorf("redeem auth key: %w", err)
	}
	if had == k.ID {
		return k, false, nil
	}
	switch k.State(now) {
	case "revoked":
		return k, false, ErrAuthKeyRevoked
	case "expired":
		return k, false, ErrAuthKeyExpired
	case "used":
		return k, false, ErrAuthKeyUsed
	}
	// The network's owner decides over new members: a banned node stays out, a locked network
	// takes none (a member redeeming a key changes nothing).
	var banned, locked, member bool
	err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM bans WHERE network = ? AND key = ?),
		(SELECT locked FROM networks WHERE name = ?), EXISTS (SELECT 1 FROM members WHERE network = ? AND key = ?)`,
		k.Network, node, k.Network, k.Network, node).Scan(&banned, &locked, &member)
	if err != nil {
		return AuthKey{}, false, fmt.Errorf("redeem auth key %s: %w", k.ID, err)
	}
	switch {
	case banned:
		return k, false, ErrBanned
	case locked && !member:
		return k, false, ErrLocked
	}
	if !member {
		if err := lim.check(ctx, tx, k.Network, node); err != nil {
			return k, false, err
		}
		if err := nameFreeIn(ctx, tx, k.Network, node); err != nil {
			return k, false, err
		}
	}
	steps := []struct {
		q    string
		args []any
	}{
		{`UPDATE authkeys SET uses = uses + 1, last_used_at = ? WHERE id = ?`, []any{now.Unix(), k.ID}},
		{`INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, []any{k.Network, node, now.Unix()}},
		{`UPDATE nodes SET authkey = ?, tag = CASE WHEN ? = '' THEN tag ELSE ? END,
			ephemeral = CASE WHEN ? = 1 THEN 1 ELSE ephemeral END WHERE key = ?`, []any{k.ID, k.Tag, k.Tag, k.Ephemeral, node}},
	}
	for _, st := range steps {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return AuthKey{}, false, fmt.Errorf("redeem auth key %s: %w", k.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return AuthKey{}, false, fmt.Errorf("redeem auth key %s: %w", k.ID, err)
	}
	k.Uses++
	k.LastUsedAt = time.Unix(now.Unix(), 0).UTC()
	return k, true, nil
}
