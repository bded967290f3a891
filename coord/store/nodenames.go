package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Node names are identities: peers reach a node as NAME.warren and access rules name it, so a name
// is unique among the nodes that share a network, and a node keeps the name it first logged in with
// (UpsertNode does not change it) until RenameNode. The store enforces uniqueness where a node gains
// a network (AddMember, Approve, RedeemAuthKey) and where it changes its name, inside the
// transaction that does it, so two concurrent changes cannot both pass.
//
// Names are not unique server-wide: two nodes that share no network may have one name, so nobody
// can squat a name for everyone on a public server.

// ErrNameTaken is wrapped by a *NameTakenError.
var ErrNameTaken = errors.New("node name taken")

// NameTakenError refuses a membership or a rename that would give two nodes that share a network
// one name.
type NameTakenError struct {
	Name    string
	Network string // where another node has Name
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("node name %q is taken in network %q", e.Name, e.Network)
}

// Unwrap makes errors.Is(err, ErrNameTaken) hold.
func (e *NameTakenError) Unwrap() error { return ErrNameTaken }

// nameFreeIn returns a *NameTakenError if a member of network other than key has key's name. The
// caller's transaction adds key to network next.
func nameFreeIn(ctx context.Context, tx *txn, network string, key []byte) error {
	var name string
	err := tx.QueryRowContext(ctx, `SELECT n.name FROM nodes n WHERE n.key = ? AND EXISTS (
		SELECT 1 FROM members m JOIN nodes o ON o.key = m.key
		WHERE m.network = ? AND o.name = n.name AND o.key != n.key)`, key, network).Scan(&name)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check node name: %w", err)
	}
	return &NameTakenError{Name: name, Network: network}
}

// RenameNode gives the node with key the name name. It fails with a *NameTakenError if a node that
// shares a network with it has that name, with an error wrapping ErrNotFound if there is no such
// node, and for an invalid name. Renaming a node to its own name changes nothing.
func (s *Store) RenameNode(ctx context.Context, key []byte, name string) error {
	if err := ValidNodeName(name); err != nil {
		return err
	}
	return s.inTx(ctx, "rename node", func(tx *txn) error {
		if err := nodeExists(ctx, tx, key); err != nil {
			return err
		}
		var network string
		err := tx.QueryRowContext(ctx, `SELECT m.network FROM members m
			JOIN members o ON o.network = m.network AND o.key != m.key
			JOIN nodes n ON n.key = o.key
			WHERE m.key = ? AND n.name = ? ORDER BY m.network LIMIT 1`, key, name).Scan(&network)
		switch {
		case err == nil:
			return &NameTakenError{Name: name, Network: network}
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE nodes SET name = ? WHERE key = ?`, name, key)
		return err
	})
}
