// Package store keeps the coordination server's persistent state — nodes and their stable overlay
// addresses, networks, and memberships — in one SQLite file (modernc.org/sqlite, pure Go, no cgo).
//
// Every node gets one host index on first sight; its IPv4 and IPv6 addresses are that index added to
// the base of the respective pool (see Pools), so a key keeps its addresses for as long as the
// database lives. The pools a database was opened with are recorded in it, and Open refuses a change
// that would renumber existing nodes.
//
// The package knows nothing about the control protocol, sessions or online state, and it does not
// hash passwords on its own: callers store what HashPassword returns. The SQL is plain (no ORM, no
// SQLite-only syntax beyond PRAGMAs in Open) so that a PostgreSQL implementation can follow the same
// methods.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

var (
	// ErrNotFound is returned when a node or network does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned by CreateNetwork when the name is already taken.
	ErrExists = errors.New("already exists")
	// ErrNotMember is returned by RemoveMember when the node is not in the network (or the network
	// does not exist).
	ErrNotMember = errors.New("not a member")
	// ErrBanned is returned by RedeemAuthKey when the network's owner banned the node.
	ErrBanned = errors.New("banned from the network")
	// ErrLocked is returned by RedeemAuthKey when the network is locked against new joins.
	ErrLocked = errors.New("network locked")
	// ErrPoolExhausted is returned by UpsertNode when no host index is left for a new node.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrTooManyNetworks and ErrNetworkFull refuse a membership beyond the server's Limits.
	ErrTooManyNetworks = errors.New("too many networks for one node")
	ErrNetworkFull     = errors.New("network full")
)

// Pools are the prefixes overlay addresses are allocated from. A node's IPv4 and IPv6 addresses share
// one host index i ≥ 1: V4.Addr()+i and V6.Addr()+i. Index 0 (the network address) is never used,
// nor are the last IPv4 address of V4 (its broadcast address) and the one before it (with V6's last
// address, every node's own DNS server in TUN mode: 100.127.255.254 by default), so a /30 holds
// exactly one node.
// V6 must have at least as many host bits as V4.
type Pools struct {
	V4 netip.Prefix // e.g. 100.64.0.0/10
	V6 netip.Prefix // e.g. fd7a:7761:7272::/48
}

// validate checks p and returns it masked, with the largest usable host index.
func (p Pools) validate() (Pools, int64, error) {
	if !p.V4.IsValid() || !p.V4.Addr().Is4() {
		return Pools{}, 0, fmt.Errorf("IPv4 pool %v is not an IPv4 prefix", p.V4)
	}
	if !p.V6.IsValid() || !p.V6.Addr().Is6() || p.V6.Addr().Is4In6() {
		return Pools{}, 0, fmt.Errorf("IPv6 pool %v is not an IPv6 prefix", p.V6)
	}
	if p.V4.Bits() > 30 {
		return Pools{}, 0, fmt.Errorf("IPv4 pool %v is too small: need at least a /30", p.V4)
	}
	host4, host6 := 32-p.V4.Bits(), 128-p.V6.Bits()
	if host6 < host4 {
		return Pools{}, 0, fmt.Errorf("IPv6 pool %v is smaller than IPv4 pool %v: need at least a /%d", p.V6, p.V4, 128-host4)
	}
	p.V4, p.V6 = p.V4.Masked(), p.V6.Masked()
	return p, int64(1)<<host4 - 3, nil
}

// Node is a registered node.
type Node struct {
	Key        []byte     // Ed25519 public key, 32 bytes
	Name       string     // a DNS label, see ValidNodeName
	IPv4, IPv6 netip.Addr // fixed on first sight
	CreatedAt  time.Time  // first sight, second precision
	LastSeen   time.Time  // last UpsertNode, second precision
	LoginDone  bool       // a login completed (CompleteLogin); false only between registration and admission
	Ephemeral  bool       // removed once offline for the server's ephemeral timeout
	Tag        string     // from the auth key it joined with; "" = none
	AuthKeyID  string     // ID of the last auth key it redeemed; "" = none
}

// Network is a named group of nodes that may reach each other.
type Network struct {
	Name         string
	PasswordHash string // from HashPassword; "" means no password
	Owner        []byte // key of the node that created it, or that ownership was transferred to
	CreatedAt    time.Time
	Approval     bool // joins wait for the owner's approval (see AddPending)
	Locked       bool // no new joins
	// Open: anyone may join without a password or approval. A network with neither that is not
	// open takes new members only through auth keys (see SetOpen).
	Open bool
}

// PeerRow is a node that shares at least one network with another node, with the shared networks.
type PeerRow struct {
	Node
	Networks []string // sorted
}

// Store is an open database. It is safe for concurrent use; writes are serialised.
type Store struct {
	db       *dbx
	name     string // for messages: the path, or the PostgreSQL URL without password
	dsn      string // PostgreSQL: the connection string (the LISTEN connection dials it); "" on SQLite
	pools    Pools  // masked
	maxIndex int64  // largest usable host index

	quarantine atomic.Int64     // freed addresses stay unused this long (ns); see SetAddressQuarantine
	clock      func() time.Time // tests: the allocator's and freeing's clock (nil = time.Now)
}

// openCheckTimeout bounds Open's quick_check.
const openCheckTimeout = 2 * time.Minute

// migrations[i] brings the schema from version i to i+1. Append only: never edit a released one.
var migrations = []string{
	// 1: nodes, networks, memberships.
	`CREATE TABLE nodes (
		key BLOB PRIMARY KEY,
		name TEXT NOT NULL,
		ip_index INTEGER NOT NULL UNIQUE,
		created_at INTEGER NOT NULL,
		last_seen INTEGER NOT NULL
	);
	CREATE TABLE networks (
		name TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		owner BLOB NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE members (
		network TEXT NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
		key BLOB NOT NULL REFERENCES nodes(key) ON DELETE CASCADE,
		joined_at INTEGER NOT NULL,
		PRIMARY KEY (network, key)
	);
	CREATE INDEX members_by_key ON members(key);`,
	// 2: server settings, at first the pools addresses were allocated from.
	`CREATE TABLE settings (
		name TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
	// 3: auth keys (stored as SHA-256 hashes), and per node: ephemeral, tag, the auth key it
	// joined with, and since when it is offline (unix milliseconds; NULL while online), which
	// the ephemeral-node reaper reads.
	`CREATE TABLE authkeys (
		id TEXT PRIMARY KEY,
		hash BLOB NOT NULL,
		network TEXT NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
		reusable INTEGER NOT NULL,
		ephemeral INTEGER NOT NULL,
		tag TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		revoked_at INTEGER NOT NULL DEFAULT 0,
		uses INTEGER NOT NULL DEFAULT 0,
		last_used_at INTEGER NOT NULL DEFAULT 0
	);
	ALTER TABLE nodes ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN tag TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN authkey TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN offline_since INTEGER;
	CREATE INDEX nodes_by_offline ON nodes(ephemeral, offline_since);`,
	// network administration: per network whether joins need the owner's approval and whether it
	// is locked against new joins; joins awaiting approval; banned keys (kept by key, not tied to
	// the nodes table, so a ban outlives a deleted node that comes back).
	`ALTER TABLE networks ADD COLUMN approval INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE networks ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE pending (
		network TEXT NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
		key BLOB NOT NULL REFERENCES nodes(key) ON DELETE CASCADE,
		requested_at INTEGER NOT NULL,
		PRIMARY KEY (network, key)
	);
	CREATE TABLE bans (
		network TEXT NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
		key BLOB NOT NULL,
		banned_at INTEGER NOT NULL,
		PRIMARY KEY (network, key)
	);`,
	// 5: per-network access rules (ACLs), the rule list as JSON text; no row = no rules.
	`CREATE TABLE acls (
		network TEXT PRIMARY KEY REFERENCES networks(name) ON DELETE CASCADE,
		rules TEXT NOT NULL,
		updated_at INTEGER NOT NULL
	);`,
	// 6: the audit log of administrative actions (see audit.go): when (unix milliseconds), who,
	// what, on what, and details; pruned by age and count on insert.
	`CREATE TABLE audit (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		at INTEGER NOT NULL,
		actor TEXT NOT NULL,
		action TEXT NOT NULL,
		target TEXT NOT NULL,
		detail TEXT NOT NULL
	);
	CREATE INDEX audit_by_at ON audit(at);`,
	// 7: each node's key fingerprint (identity.Fingerprint), so that an owner can name a node that
	// is no longer in the network (ban after kick); filled in at login ('' until the next one).
	`ALTER TABLE nodes ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
	CREATE INDEX nodes_by_fingerprint ON nodes(fingerprint);`,
	// 8: node names are identities, unique among the nodes that share a network (nodenames.go);
	// the checks look nodes up by name. Duplicates an older server let in stay until one of the
	// nodes renames: nodes resolve a duplicated name to neither.
	`CREATE INDEX nodes_by_name ON nodes(name);`,
	// 9: networks are closed unless their owner opens them: is_open says a network takes anyone
	// without a password or approval. Networks that did so before keep doing so (marked open). Each
	// pending join records the source range it came from (per-source caps); joins expire by age.
	`ALTER TABLE networks ADD COLUMN is_open INTEGER NOT NULL DEFAULT 0;
	UPDATE networks SET is_open = 1 WHERE password_hash = '' AND approval = 0;
	ALTER TABLE pending ADD COLUMN source TEXT NOT NULL DEFAULT '';
	CREATE INDEX pending_by_source ON pending(source);
	CREATE INDEX pending_by_time ON pending(requested_at);
	CREATE INDEX pending_by_key ON pending(key);`,
	// 10: a node row exists from the first login's registration on, but counts only once a login
	// completed (login_done = 1); rows of logins refused after registration (a bad auth key) are
	// deleted, and those left by a crash are reaped (DeleteStaleUnfinished). Existing nodes count as
	// completed.
	`ALTER TABLE nodes ADD COLUMN login_done INTEGER NOT NULL DEFAULT 1;
	CREATE INDEX nodes_by_login_done ON nodes(login_done, created_at);`,
	// 11: overlay addresses freed by deleted nodes, by host index, with when (unix milliseconds):
	// the allocator skips them for the address quarantine (freed.go).
	`CREATE TABLE freed_addresses (
		ip_index INTEGER PRIMARY KEY,
		freed_at INTEGER NOT NULL
	);
	CREATE INDEX freed_by_time ON freed_addresses(freed_at);`,
	// 12: several coords on one (PostgreSQL) database (events.go): the change events each coord
	// writes and the others read by ID; which coord each online node is logged in to; and each
	// coord's heartbeat, by which the others tell a dead coord's nodes offline.
	`CREATE TABLE events (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		network TEXT NOT NULL,
		kind TEXT NOT NULL,
		payload TEXT NOT NULL,
		created INTEGER NOT NULL
	);
	CREATE INDEX events_by_created ON events(created);
	CREATE TABLE coords (
		id TEXT PRIMARY KEY,
		addr TEXT NOT NULL,
		heartbeat INTEGER NOT NULL
	);
	CREATE TABLE presence (
		key BLOB PRIMARY KEY,
		coord TEXT NOT NULL,
		since INTEGER NOT NULL,
		heartbeat INTEGER NOT NULL,
		endpoints TEXT NOT NULL
	);
	CREATE INDEX presence_by_coord ON presence(coord);`,
	// 13: the allocator's floor (freed.go): no host index below it is free. 1 holds for any
	// database; the first allocation raises it.
	`CREATE TABLE address_floor (below INTEGER NOT NULL);
	INSERT INTO address_floor (below) VALUES (1);`,
}

// Open opens the database at path, creating the file (mode 0600) and schema if needed, and applies
// pending migrations. It fails if pools are invalid, or if they move the base address of a pool
// the database already has nodes in, or leave an existing node outside the pool.
//
// A zero Pools means "the pools recorded in the database": tools that work on the data directory
// of a server (running or not) open it that way and change nothing about the pools. It fails if the
// database has none recorded, e.g. because no server has opened it yet.
//
// Several Stores, in one process or several, may use one file at the same time: the database is in
// WAL mode, every write transaction takes the write lock up front, and a writer waits up to five
// seconds (busy timeout) for another one to finish.
//
// Open runs SQLite's quick_check first (linear in the file's size: 0.4-0.5 s for a 25 MiB database
// of 100k nodes on a loaded 2-core machine) and fails with ErrCorrupt if the file is damaged.
func Open(path string, pools Pools) (*Store, error) {
	recorded := pools == Pools{}
	var maxIndex int64
	if !recorded {
		var err error
		if pools, maxIndex, err = pools.validate(); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	var s *Store
	var err error
	if IsPostgres(path) {
		s, err = openPostgres(path)
	} else {
		s, err = openSQLite(path)
	}
	if err != nil {
		return nil, err
	}
	s.pools, s.maxIndex = pools, maxIndex
	name := s.String()
	if err := s.migrate(); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: %s: %w", name, corrupt(err))
	}
	check := s.checkPools
	if recorded {
		check = s.loadPools
	}
	if err := check(); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: %s: %w", name, err)
	}
	return s, nil
}

// openSQLite opens (creating it 0600) the SQLite file at path.
func openSQLite(path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// Create the file ourselves so that it (and the -wal/-shm files SQLite derives from it) are 0600.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer at a time anyway, and it makes every transaction see a
	// consistent store without SQLITE_BUSY juggling inside the process.
	db.SetMaxOpenConns(1)
	// A damaged file is named as such (ErrCorrupt), before a migration or a query trips over it.
	ctx, cancel := context.WithTimeout(context.Background(), openCheckTimeout)
	err = quickCheck(ctx, db)
	cancel()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return &Store{db: &dbx{DB: db, d: dialect{}}, name: path}, nil
}

// loadPools sets s.pools from the pools recorded in the database.
func (s *Store) loadPools() error {
	var v4, v6 string
	err := s.db.QueryRow(`SELECT (SELECT value FROM settings WHERE name = 'pool4'), (SELECT value FROM settings WHERE name = 'pool6')`).
		Scan(&v4, &v6)
	if err != nil {
		return fmt.Errorf("no address pools recorded (has a server used this database yet?): %w", err)
	}
	p4, err4 := netip.ParsePrefix(v4)
	p6, err6 := netip.ParsePrefix(v6)
	if err := errors.Join(err4, err6); err != nil {
		return fmt.Errorf("recorded address pools: %w", err)
	}
	pools, maxIndex, err := Pools{V4: p4, V6: p6}.validate()
	if err != nil {
		return fmt.Errorf("recorded address pools: %w", err)
	}
	s.pools, s.maxIndex = pools, maxIndex
	return nil
}

// dsn builds the modernc.org/sqlite data source name for an absolute path. The path is escaped as a
// URI so that '?', '#' or '%' in it cannot be taken for parameters.
func dsn(abs string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL rather than WAL's usual NORMAL: an address handed out must survive a power cut.
	q.Add("_pragma", "synchronous(FULL)")
	// BEGIN IMMEDIATE: take the write lock up front, so that two processes on one file wait on
	// busy_timeout instead of failing to upgrade a read lock.
	q.Set("_txlock", "immediate")
	return fileURI(abs) + "?" + q.Encode()
}

// migrate applies pending migrations, each in its own transaction together with the version bump.
func (s *Store) migrate() error {
	for {
		done, err := s.migrateOne()
		if err != nil || done {
			return err
		}
	}
}

func (s *Store) migrateOne() (done bool, err error) {
	tx, err := s.db.Begin()
	if err != nil {
		return false, fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	// Read the version inside the (immediate) transaction, so a second process opening the same file
	// at the same time waits and then sees our work.
	version, err := s.schemaVersion(tx)
	if err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case version > len(migrations):
		return false, fmt.Errorf("schema version %d is newer than this server knows (%d)", version, len(migrations))
	case version == len(migrations):
		return true, nil
	}
	for _, stmt := range statements(s.db.d.ddl(migrations[version])) {
		if _, err := tx.Exec(stmt); err != nil {
			return false, fmt.Errorf("migration %d: %w", version+1, err)
		}
	}
	if err := s.setSchemaVersion(tx, version+1); err != nil {
		return false, fmt.Errorf("migration %d: set version: %w", version+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %d: commit: %w", version+1, err)
	}
	return false, nil
}

// checkPools compares s.pools with the pools recorded in the database and records them. Moving a
// pool's base address would renumber every node, so it is refused once nodes exist; resizing is fine
// as long as every allocated index still fits.
func (s *Store) checkPools() error {
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("check pools: %w", err)
	}
	defer tx.Rollback()
	var nodes, maxIdx int64
	if err := tx.QueryRow(`SELECT COUNT(*), COALESCE(MAX(ip_index), 0) FROM nodes`).Scan(&nodes, &maxIdx); err != nil {
		return fmt.Errorf("check pools: %w", err)
	}
	for _, p := range []struct {
		name string
		cur  netip.Prefix
	}{{"pool4", s.pools.V4}, {"pool6", s.pools.V6}} {
		var stored string
		err := tx.QueryRow(`SELECT value FROM settings WHERE name = ?`, p.name).Scan(&stored)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check pools: %w", err)
		}
		if old, perr := netip.ParsePrefix(stored); err == nil && nodes > 0 && (perr != nil || old.Addr() != p.cur.Addr()) {
			return fmt.Errorf("pool %v differs from %s recorded in the database: existing nodes would be renumbered", p.cur, stored)
		}
		if _, err := tx.Exec(`DELETE FROM settings WHERE name = ?`, p.name); err != nil {
			return fmt.Errorf("record pools: %w", err)
		}
		if _, err := tx.Exec(`INSERT INTO settings (name, value) VALUES (?, ?)`, p.name, p.cur.String()); err != nil {
			return fmt.Errorf("record pools: %w", err)
		}
	}
	if maxIdx > s.maxIndex {
		return fmt.Errorf("pools %v, %v hold %d hosts, but a node already has host index %d", s.pools.V4, s.pools.V6, s.maxIndex, maxIdx)
	}
	return tx.Commit()
}

// Pools returns the pools the store allocates from, masked.
func (s *Store) Pools() Pools { return s.pools }

// String names the database for messages: the SQLite path, or the PostgreSQL address without
// password.
func (s *Store) String() string { return s.name }

// Close closes the database. Calling it again returns nil.
func (s *Store) Close() error { return s.db.Close() }
