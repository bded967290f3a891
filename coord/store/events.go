package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Several coords may serve one database (PostgreSQL). Each tells the others about a change by
// writing an event row (Publish); on PostgreSQL the same transaction sends
// pg_notify('warren_events', id), which every coord LISTENs for (Listen). A coord reads the events
// after the last ID it has seen (EventsAfter), so a notification lost with a dropped LISTEN
// connection costs nothing but latency: the next read catches up by ID.
//
// IDs are handed out in commit order: Publish's transaction holds the store's writer lock (see
// dbx.BeginTx) from before the insert until the commit, so no event with a smaller ID can commit
// after one with a larger ID has been read. (On SQLite there is one writer at a time anyway.)
//
// Which coord each node is logged in to is in presence rows; each coord's liveness in its coords
// row's heartbeat. A coord whose heartbeat is older than the caller's timeout is dead, and the nodes
// it held count offline.

// NotifyChannel is the PostgreSQL channel events are announced on.
const NotifyChannel = "warren_events"

// Event kinds.
const (
	EventNode  = "node"  // Payload: a node changed (membership, name, online state, endpoints): its key, hex
	EventACL   = "acl"   // a network's rules changed; Network names it
	EventGone  = "gone"  // Payload: a deleted node's key, hex
	EventJoins = "joins" // Payload: the key of a network owner whose list of join requests changed
)

// MaxEventPayload bounds an event's payload; Publish refuses larger ones.
const MaxEventPayload = 4096

// Event is one change announced to the other coords.
type Event struct {
	ID      int64
	Network string // "" when the change is about a node
	Kind    string
	Payload string
	Created time.Time // millisecond precision
}

// Publish records an event and, on PostgreSQL, notifies the listening coords, in one transaction.
// It returns the event's ID.
func (s *Store) Publish(ctx context.Context, network, kind, payload string) (int64, error) {
	if len(payload) > MaxEventPayload {
		return 0, fmt.Errorf("publish %s event: payload of %d bytes exceeds %d", kind, len(payload), MaxEventPayload)
	}
	var id int64
	err := s.inTx(ctx, "publish "+kind+" event", func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO events (network, kind, payload, created) VALUES (?, ?, ?, ?) RETURNING id`,
			network, kind, payload, time.Now().UnixMilli()).Scan(&id); err != nil {
			return err
		}
		if s.db.d.pg {
			// Delivered at commit, to the coords listening then; the others catch up by ID.
			_, err := tx.ExecContext(ctx, `SELECT pg_notify(?, ?)`, NotifyChannel, strconv.FormatInt(id, 10))
			return err
		}
		return nil
	})
	return id, err
}

// EventsAfter returns up to limit events with IDs above after, oldest first.
func (s *Store) EventsAfter(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, network, kind, payload, created FROM events WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var created int64
		if err := rows.Scan(&e.ID, &e.Network, &e.Kind, &e.Payload, &created); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Created = time.UnixMilli(created).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// LastEventID returns the highest event ID, 0 if there is none: where a starting coord begins to
// read (it loads the current state itself).
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	return id, nil
}

// PruneEvents deletes the events created before `before` and returns how many. A coord that was
// away longer than the retention resynchronises its nodes instead of replaying.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM events WHERE created < ?`, before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return res.RowsAffected()
}

// Presence says which coord a node is logged in to.
type Presence struct {
	Key       []byte
	Coord     string
	Since     time.Time // login, millisecond precision
	Heartbeat time.Time // last SetPresence (login or endpoint change)
	Endpoints string    // opaque to the store: the coord's encoding of the node's endpoints
}

// SetPresence records that the node key is logged in to coord (taking it over from any other
// coord), with its endpoints. since is kept while the coord stays the same.
func (s *Store) SetPresence(ctx context.Context, key []byte, coord, endpoints string, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, setPresenceSQL, key, coord, now.UnixMilli(), now.UnixMilli(), endpoints); err != nil {
		return fmt.Errorf("record presence: %w", err)
	}
	return nil
}

// setPresenceSQL records a presence: key, coord, since, heartbeat, endpoints.
const setPresenceSQL = `INSERT INTO presence (key, coord, since, heartbeat, endpoints) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET
			since = CASE WHEN presence.coord = excluded.coord THEN presence.since ELSE excluded.since END,
			coord = excluded.coord, heartbeat = excluded.heartbeat, endpoints = excluded.endpoints`

// ClearPresence removes the node's presence if it is on coord (a node that has moved on to another
// coord stays there), and reports whether it did.
func (s *Store) ClearPresence(ctx context.Context, key []byte, coord string) (bool, error) {
	ok, err := deleted(s.db.ExecContext(ctx, `DELETE FROM presence WHERE key = ? AND coord = ?`, key, coord))
	if err != nil {
		return false, fmt.Errorf("clear presence: %w", err)
	}
	return ok, nil
}

// PresenceOf returns where the node is logged in, or an error wrapping ErrNotFound.
func (s *Store) PresenceOf(ctx context.Context, key []byte) (Presence, error) {
	p, err := scanPresence(s.db.QueryRowContext(ctx, `SELECT key, coord, since, heartbeat, endpoints FROM presence WHERE key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return Presence{}, fmt.Errorf("presence of %x: %w", key, ErrNotFound)
	}
	if err != nil {
		return Presence{}, fmt.Errorf("presence of %x: %w", key, err)
	}
	return p, nil
}

// Presences lists every presence row (a starting coord loads them once; events keep it current).
func (s *Store) Presences(ctx context.Context) ([]Presence, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, coord, since, heartbeat, endpoints FROM presence`)
	if err != nil {
		return nil, fmt.Errorf("list presence: %w", err)
	}
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		p, err := scanPresence(rows)
		if err != nil {
			return nil, fmt.Errorf("list presence: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list presence: %w", err)
	}
	return out, nil
}

func scanPresence(r scanner) (Presence, error) {
	var p Presence
	var since, hb int64
	if err := r.Scan(&p.Key, &p.Coord, &since, &hb, &p.Endpoints); err != nil {
		return Presence{}, err
	}
	p.Since, p.Heartbeat = time.UnixMilli(since).UTC(), time.UnixMilli(hb).UTC()
	return p, nil
}

// Coord is a coordination server that serves the database.
type Coord struct {
	ID        string
	Addr      string // where nodes reach it, for operators
	Heartbeat time.Time
}

// CoordHeartbeat records that coord id (at addr) is alive at now.
func (s *Store) CoordHeartbeat(ctx context.Context, id, addr string, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO coords (id, addr, heartbeat) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, heartbeat = excluded.heartbeat`, id, addr, now.UnixMilli()); err != nil {
		return fmt.Errorf("coord heartbeat: %w", err)
	}
	return nil
}

// Coords lists the coords that have served the database.
func (s *Store) Coords(ctx context.Context) ([]Coord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, addr, heartbeat FROM coords ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list coords: %w", err)
	}
	defer rows.Close()
	var out []Coord
	for rows.Next() {
		var c Coord
		var hb int64
		if err := rows.Scan(&c.ID, &c.Addr, &hb); err != nil {
			return nil, fmt.Errorf("list coords: %w", err)
		}
		c.Heartbeat = time.UnixMilli(hb).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list coords: %w", err)
	}
	return out, nil
}

// RemoveCoord deletes coord id and the presence of the nodes it held, in one transaction, and
// returns those nodes' keys: a coord shutting down cleanly, or the others clearing up after a dead
// one.
func (s *Store) RemoveCoord(ctx context.Context, id string) ([][]byte, error) {
	var keys [][]byte
	err := s.inTx(ctx, "remove coord "+id, func(tx *txn) error {
		var err error
		if keys, err = keysOf(tx.QueryContext(ctx, `SELECT key FROM presence WHERE coord = ?`, id)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM presence WHERE coord = ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM coords WHERE id = ?`, id)
		return err
	})
	return keys, err
}

// PresenceOp is what a ClusterWrite does to the node's presence row.
type PresenceOp int

// Presence operations of a ClusterWrite.
const (
	PresenceKeep   PresenceOp = iota // no presence change
	PresenceSet                      // SetPresence: the node logged in to Coord (taking it over)
	PresenceUpdate                   // new endpoints, recorded only while the node is still on Coord
	PresenceClear                    // ClearPresence; the write's event goes out only if it removed the row
)

// ClusterWrite is one change a coord tells the others about: a presence change, an event, or both
// (the presence first).
type ClusterWrite struct {
	Presence  PresenceOp
	Key       []byte // the node, for a presence change
	Coord     string
	Endpoints string
	At        time.Time

	Event                  bool // publish an event (see Publish)
	Network, Kind, Payload string
}

// WriteCluster applies ws in order in one transaction, with one notification (PostgreSQL) for all
// their events: a coord queues its presence changes and events and writes them in batches, so that
// fifty endpoint changes cost one commit instead of a hundred. The presence rows are written before
// the store's writer lock is taken (single statements need none, as SetPresence takes none); the
// lock, which keeps event IDs in commit order, covers one INSERT of all the batch's events, so
// that a batch holds it no longer than one Publish did.
func (s *Store) WriteCluster(ctx context.Context, ws []ClusterWrite) error {
	if len(ws) == 0 {
		return nil
	}
	for _, w := range ws {
		if w.Event && len(w.Payload) > MaxEventPayload {
			return fmt.Errorf("publish %s event: payload of %d bytes exceeds %d", w.Kind, len(w.Payload), MaxEventPayload)
		}
	}
	step := fmt.Sprintf("write %d cluster changes", len(ws))
	tx, err := s.db.beginUnlocked(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	defer tx.Rollback()
	var events []any // network, kind, payload, created of each event to publish, in order
	now := time.Now().UnixMilli()
	for _, w := range ws {
		publish := w.Event
		switch w.Presence {
		case PresenceSet:
			if _, err := tx.ExecContext(ctx, setPresenceSQL, w.Key, w.Coord, w.At.UnixMilli(), w.At.UnixMilli(), w.Endpoints); err != nil {
				return fmt.Errorf("%s: record presence: %w", step, err)
			}
		case PresenceUpdate:
			if _, err := tx.ExecContext(ctx, `UPDATE presence SET heartbeat = ?, endpoints = ? WHERE key = ? AND coord = ?`,
				w.At.UnixMilli(), w.Endpoints, w.Key, w.Coord); err != nil {
				return fmt.Errorf("%s: update presence: %w", step, err)
			}
		case PresenceClear:
			ok, err := deleted(tx.ExecContext(ctx, `DELETE FROM presence WHERE key = ? AND coord = ?`, w.Key, w.Coord))
			if err != nil {
				return fmt.Errorf("%s: clear presence: %w", step, err)
			}
			publish = publish && ok
		}
		if publish {
			events = append(events, w.Network, w.Kind, w.Payload, now)
		}
	}
	if len(events) > 0 {
		if err := tx.lockWriter(ctx); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		// One statement for all: IDs are handed out in the order of the rows.
		rows := strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", len(events)/4), ", ")
		ids, err := tx.QueryContext(ctx, `INSERT INTO events (network, kind, payload, created) VALUES `+rows+` RETURNING id`, events...)
		if err != nil {
			return fmt.Errorf("%s: publish events: %w", step, err)
		}
		var last int64
		for ids.Next() {
			var id int64
			if err := ids.Scan(&id); err != nil {
				ids.Close()
				return fmt.Errorf("%s: publish events: %w", step, err)
			}
			last = max(last, id)
		}
		ids.Close()
		if err := ids.Err(); err != nil {
			return fmt.Errorf("%s: publish events: %w", step, err)
		}
		if s.db.d.pg {
			// One notification wakes the listeners for the whole batch: they read by ID.
			if _, err := tx.ExecContext(ctx, `SELECT pg_notify(?, ?)`, NotifyChannel, strconv.FormatInt(last, 10)); err != nil {
				return fmt.Errorf("%s: notify: %w", step, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return nil
}
