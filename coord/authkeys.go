package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// admit applies what a login asks for beyond registration: the auth key's network, tag and
// ephemerality, and Login.Ephemeral. A refused key fails the login with CodeAuthKey, whose message
// the node shows its user. It returns the node as stored afterwards. The caller holds changeMu, so
// the new membership and the peer maps that login sends next agree.
func (s *Server) admit(ctx context.Context, key nodeKey, node store.Node, l *control.Login, log hclog.Logger) (store.Node, error) {
	changed := false
	if l.AuthKey != "" {
		k, redeemed, err := s.cfg.Store.RedeemAuthKey(ctx, key[:], l.AuthKey, time.Now(), s.limits())
		if err != nil {
			return store.Node{}, s.authKeyError(k, err, log)
		}
		if redeemed {
			log.Info("joined with auth key", "authkey", k.ID, "network", k.Network, "ephemeral", k.Ephemeral, "tag", k.Tag)
		}
		changed = redeemed
	}
	if l.Ephemeral && !node.Ephemeral {
		if err := s.cfg.Store.SetEphemeral(ctx, key[:]); err != nil {
			return store.Node{}, s.storeError("mark node ephemeral", err)
		}
		changed = true
	}
	if !changed {
		return node, nil
	}
	node, err := s.cfg.Store.Node(ctx, key[:])
	if err != nil {
		return store.Node{}, s.storeError("reload node", err)
	}
	return node, nil
}

// authKeyError turns a refused auth key into the login's answer. The key itself is never logged,
// only its public ID.
func (s *Server) authKeyError(k store.AuthKey, err error, log hclog.Logger) error {
	var msg string
	switch {
	case errors.Is(err, store.ErrAuthKeyInvalid):
		msg = "invalid auth key: not a key this coordination server issued"
	case errors.Is(err, store.ErrAuthKeyExpired):
		msg = fmt.Sprintf("auth key %s expired at %s", k.ID, k.ExpiresAt.Format(time.RFC3339))
	case errors.Is(err, store.ErrAuthKeyRevoked):
		msg = fmt.Sprintf("auth key %s was revoked", k.ID)
	case errors.Is(err, store.ErrAuthKeyUsed):
		msg = fmt.Sprintf("auth key %s was already used: it is single-use (create a --reusable key for several nodes)", k.ID)
	case errors.Is(err, store.ErrBanned):
		log.Info("auth key refused: node banned", "authkey", k.ID, "network", k.Network)
		return &control.Error{Code: control.CodeBanned, Message: fmt.Sprintf("the owner of network %q banned this node", k.Network)}
	case errors.Is(err, store.ErrTooManyNetworks), errors.Is(err, store.ErrNetworkFull):
		return s.limitError(k.Network, err)
	case errors.Is(err, store.ErrNameTaken):
		log.Info("auth key refused: name taken", "authkey", k.ID, "network", k.Network)
		return nameTaken(err)
	case errors.Is(err, store.ErrLocked):
		return &control.Error{Code: control.CodeLocked, Message: fmt.Sprintf("network %q is locked by its owner: it takes no new members", k.Network)}
	default:
		return s.storeError("redeem auth key", err)
	}
	log.Info("auth key refused", "authkey", k.ID, "reason", err)
	return &control.Error{Code: control.CodeAuthKey, Message: msg}
}
