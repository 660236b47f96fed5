package api

import (
	"context"

	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// errUnauthorized is Telegram's answer to a call that needs a signed-in
// user on a key that has none.
var errUnauthorized = tgerr.New(401, "AUTH_KEY_UNREGISTERED")

// self returns the user signed in on the call's permanent key.
func (s *Service) self(ctx context.Context) (int64, error) {
	call := callFrom(ctx)
	if call == nil {
		return 0, errUnauthorized
	}
	if call.PermKeyID == 0 {
		// A temporary key not bound yet speaks for nobody.
		return 0, tgerr.New(401, "AUTH_KEY_PERM_EMPTY")
	}
	var uid int64
	err := s.m.View(ctx, func(tx storage.Reader) error {
		a, ok, err := messaging.GetAuthorization(tx, call.PermKeyID)
		if err != nil || !ok {
			return err
		}
		uid = a.UserID
		return nil
	})
	if err != nil {
		return 0, s.internal("authorization", err)
	}
	if uid == 0 {
		return 0, errUnauthorized
	}
	return uid, nil
}

// env fixes a command's time and randomness when it is proposed.
func (s *Service) env() (messaging.Env, error) {
	e := messaging.Env{Now: s.opts.Now().Unix()}
	if _, err := s.opts.Rand.Read(e.Rand[:]); err != nil {
		return e, err
	}
	return e, nil
}
