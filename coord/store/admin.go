package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Network administration: the owner's switches on a network (approval, lock, password, owner),
// joins awaiting approval, and bans. The store only records; who may do what is the caller's
// business.

// Roster states.
const (
	StateMember  = "member"
	StatePending = "pending"
	StateBanned  = "banned"
)

// RosterEntry is one node in a network's roster: a member, a pending join, or a ban.
type RosterEntry struct {
	Key   []byte
	Node  *Node  // nil for a banned key no longer registered
	State string // StateMember, StatePending or StateBanned
}

// SetApproval sets whether joins to the network need its owner's approval.
func (s *Store) SetApproval(ctx context.Context, network string, on bool) error {
	return s.setNetwork(ctx, network, "approval", on)
}

// SetLocked locks the network against new joins, or unlocks it.
func (s *Store) SetLocked(ctx context.Context, network string, on bool) error {
	return s.setNetwork(ctx, network, "locked", on)
}

// SetPassword replaces the network's password hash ("" = no password).
func (s *Store) SetPassword(ctx context.Context, network, passwordHash string) error {
	return s.setNetwork(ctx, network, "password_hash", passwordHash)
}

// setNetwork sets one column of a network; col is a constant of this file, never input.
func (s *Store) setNetwork(ctx context.Context, network, col string, v any) error {
	res, err := s.db.ExecContext(ctx, `UPDATE networks SET `+col+` = ? WHERE name = ?`, v, network)
	if err != nil {
		return fmt.Errorf("network %q: set %s: %w", network, col, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("network %q: set %s: %w", network, col, err)
	} else if n == 0 {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	return nil
}

// SetOwner makes key the network's owner. It must be a member (else an error wrapping ErrNotMember).
func (s *Store) SetOwner(ctx context.Context, network string, key []byte) error {
	return s.inTx(ctx, "transfer "+network, func(tx *txn) error {
		if err := isMember(ctx, tx, network, key); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE networks SET owner = ? WHERE name = ?`, key, network)
		return err
	})
}

// DeleteNetwork deletes a network with its memberships, pending joins, bans and auth keys. It
// returns an error wrapping ErrNotFound if there is no such network.
func (s *Store) DeleteNetwork(ctx context.Context, network string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM networks WHERE name = ?`, network)
	if err != nil {
		return fmt.Errorf("delete network %q: %w", network, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete network %q: %w", network, err)
	} else if n == 0 {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	return nil
}

// AddPending records a join awaiting approval, now and from no particular source (see
// AddJoinRequest); recording it again changes nothing.
func (s *Store) AddPending(ctx context.Context, network string, key []byte) error {
	return s.AddJoinRequest(ctx, network, key, "", time.Now())
}

// Approve turns a pending join into a membership, in one transaction. It returns an error wrapping
// ErrNotFound if the node has no pending join to the network, and a *NameTakenError (the join stays
// pending) if a member has the node's name.
func (s *Store) Approve(ctx context.Context, network string, key []byte) error {
	return s.inTx(ctx, "approve join to "+network, func(tx *txn) error {
		if ok, err := deleted(tx.ExecContext(ctx, `DELETE FROM pending WHERE network = ? AND key = ?`, network, key)); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("no pending join: %w", ErrNotFound)
		}
		if err := nameFreeIn(ctx, tx, network, key); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO members (network, key, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			network, key, time.Now().Unix())
		return err
	})
}

// RemovePending drops a pending join and reports whether there was one.
func (s *Store) RemovePending(ctx context.Context, network string, key []byte) (bool, error) {
	ok, err := deleted(s.db.ExecContext(ctx, `DELETE FROM pending WHERE network = ? AND key = ?`, network, key))
	if err != nil {
		return false, fmt.Errorf("drop pending join to %q: %w", network, err)
	}
	return ok, nil
}

// Ban removes the key's membership and pending join, if any, and bans it from the network, in one
// transaction. Banning a banned key changes nothing.
func (s *Store) Ban(ctx context.Context, network string, key []byte) error {
	return s.inTx(ctx, "ban from "+network, func(tx *txn) error {
		for _, q := range []string{`DELETE FROM members WHERE network = ? AND key = ?`, `DELETE FROM pending WHERE network = ? AND key = ?`} {
			if _, err := tx.ExecContext(ctx, q, network, key); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO bans (network, key, banned_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			network, key, time.Now().Unix())
		return err
	})
}

// Unban lifts a ban and reports whether there was one.
func (s *Store) Unban(ctx context.Context, network string, key []byte) (bool, error) {
	ok, err := deleted(s.db.ExecContext(ctx, `DELETE FROM bans WHERE network = ? AND key = ?`, network, key))
	if err != nil {
		return false, fmt.Errorf("unban from %q: %w", network, err)
	}
	return ok, nil
}

// Standing reports whether key is a member of, has a pending join to, or is banned from network.
func (s *Store) Standing(ctx context.Context, network string, key []byte) (member, pending, banned bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM members WHERE network = ? AND key = ?),
		EXISTS (SELECT 1 FROM pending WHERE network = ? AND key = ?), EXISTS (SELECT 1 FROM bans WHERE network = ? AND key = ?)`,
		network, key, network, key, network, key).Scan(&member, &pending, &banned)
	if err != nil {
		return false, false, false, fmt.Errorf("standing in %q: %w", network, err)
	}
	return member, pending, banned, nil
}

// Limits bound memberships; zero fields do not limit.
type Limits struct {
	NetworksPerNode int // networks a node may be a member of
	NodesPerNetwork int // members a network may have
}

// check returns ErrTooManyNetworks or ErrNetworkFull if key joining network would break a limit.
func (l Limits) check(ctx context.Context, tx *txn, network string, key []byte) error {
	var nets, members int
	err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM members WHERE key = ?), (SELECT COUNT(*) FROM members WHERE network = ?)`,
		key, network).Scan(&nets, &members)
	switch {
	case err != nil:
		return fmt.Errorf("count memberships: %w", err)
	case l.NetworksPerNode > 0 && nets >= l.NetworksPerNode:
		return ErrTooManyNetworks
	case l.NodesPerNetwork > 0 && members >= l.NodesPerNetwork:
		return ErrNetworkFull
	}
	return nil
}

// CountPending returns how many joins wait for approval in network, and how many key waits for in
// all networks.
func (s *Store) CountPending(ctx context.Context, network string, key []byte) (inNetwork, ofNode int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM pending WHERE network = ?), (SELECT COUNT(*) FROM pending WHERE key = ?)`,
		network, key).Scan(&inNetwork, &ofNode)
	if err != nil {
		return 0, 0, fmt.Errorf("count pending joins: %w", err)
	}
	return inNetwork, ofNode, nil
}

// CountMembers returns how many members a network has.
func (s *Store) CountMembers(ctx context.Context, network string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM members WHERE network = ?`, network).Scan(&n); err != nil {
		return 0, fmt.Errorf("count members of %q: %w", network, err)
	}
	return n, nil
}

// CountNetworks returns how many networks a node is a member of.
func (s *Store) CountNetworks(ctx context.Context, key []byte) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM members WHERE key = ?`, key).Scan(&n); err != nil {
		return 0, fmt.Errorf("count networks: %w", err)
	}
	return n, nil
}

// Roster lists a network's members, pending joins and bans, members first, each group sorted by
// name (then key). An unknown network has none.
func (s *Store) Roster(ctx context.Context, network string) ([]RosterEntry, error) {
	members, err := s.Members(ctx, network)
	if err != nil {
		return nil, err
	}
	out := make([]RosterEntry, 0, len(members))
	for i := range members {
		out = append(out, RosterEntry{Key: members[i].Key, Node: &members[i], State: StateMember})
	}
	for _, g := range []struct{ table, state string }{{"pending", StatePending}, {"bans", StateBanned}} {
		rows, err := s.db.QueryContext(ctx, `SELECT t.key, n.key IS NOT NULL, t.key, COALESCE(n.name, ''), COALESCE(n.ip_index, 1),
			COALESCE(n.created_at, 0), COALESCE(n.last_seen, 0), COALESCE(n.ephemeral, 0), COALESCE(n.tag, ''), COALESCE(n.authkey, ''), COALESCE(n.login_done, 1)
			FROM `+g.table+` t LEFT JOIN nodes n ON n.key = t.key WHERE t.network = ?`, network)
		if err != nil {
			return nil, fmt.Errorf("roster of %q: %w", network, err)
		}
		var group []RosterEntry
		for rows.Next() {
			var key []byte
			var known bool
			n, err := s.scanNode(&prefixScanner{r: rows, extra: []any{&key, &known}})
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("roster of %q: %w", network, err)
			}
			e := RosterEntry{Key: key, State: g.state}
			if known {
				e.Node = &n
			}
			group = append(group, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("roster of %q: %w", network, err)
		}
		sort.Slice(group, func(i, j int) bool {
			a, b := group[i], group[j]
			if a.Node != nil && b.Node != nil {
				return nodeLess(*a.Node, *b.Node)
			}
			return a.Node != nil || (b.Node == nil && string(a.Key) < string(b.Key))
		})
		out = append(out, group...)
	}
	return out, nil
}

// prefixScanner scans leading columns into extra, the rest into the caller's targets.
type prefixScanner struct {
	r     scanner
	extra []any
}

func (p *prefixScanner) Scan(dest ...any) error { return p.r.Scan(append(p.extra, dest...)...) }

func isMember(ctx context.Context, tx *txn, network string, key []byte) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM members WHERE network = ? AND key = ?`, network, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotMember
	}
	return err
}

// inTx runs f in a transaction and commits it; errors are wrapped with step.
func (s *Store) inTx(ctx context.Context, step string, f func(*txn) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return nil
}

// deleted reports whether an Exec deleted (or changed) at least one row.
func deleted(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
