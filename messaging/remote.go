package messaging

import (
	"encoding/json"
	"fmt"

	"github.com/mtnode/mtnode/storage"
)

// Users of other DCs. A user's public record lives in the directory of
// the user's home DC; a DC that talks to that user keeps a copy in its own
// directory, under the same key (user/<id>: an id names its home DC, so a
// copy can never be mistaken for, or overwrite, one of this DC's users).
// The copy is what the home DC last answered; reads prefer the home DC
// and fall back to the copy when it cannot be reached, so a DC cut off
// from another still shows and messages the users its people talk to.

// MaxRemoteRecord bounds a copied user record.
const MaxRemoteRecord = 16 << 10

// RemoteUser stores this DC's copy of the user record of a user homed in
// another DC, as its home DC encoded it.
type RemoteUser struct {
	ID     int64
	Record []byte
}

// Kind implements Command.
func (RemoteUser) Kind() string { return "users.remote_copy" }

func (c RemoteUser) apply(tx *storage.Txn, env Env) (any, error) {
	l := env.Layout()
	if home := HomeDC(c.ID); l.DC == 0 || home == 0 || home == l.DC {
		return nil, fmt.Errorf("%w: user %d is not of another DC", ErrCodec, c.ID)
	}
	var u User
	if len(c.Record) > MaxRemoteRecord || json.Unmarshal(c.Record, &u) != nil || u.ID != c.ID {
		return nil, fmt.Errorf("%w: bad record for user %d", ErrCodec, c.ID)
	}
	return nil, tx.Set(key("user", c.ID), c.Record)
}
