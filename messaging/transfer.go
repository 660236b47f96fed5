package messaging

import (
	"encoding/json"
	"fmt"

	"github.com/mtnode/mtnode/storage"
)

// Authorizations across DCs (auth.exportAuthorization,
// auth.importAuthorization). A user signed in at home lets a client use
// another DC X: home records a one-time token, the client presents it at
// X, X asks home to take it, and then
//
//   - home keeps the authorization among the user's own, marked with the
//     DC its key lives in (Authorization.KeyDC), so the user sees it in
//     account.getAuthorizations and can end it from home;
//   - X keeps a guest authorization for its local key: the key is signed
//     in as a user of another DC.
//
// Ending it at home (any DeleteAuthorization of one with KeyDC set) sends
// X a RevokeGuest step through the outbox, which removes the guest
// authorization there; home refuses at once anything X carries for it.
//
//	xport/<uid>/<token hash>   exportRecord, until taken or expired

// Bounds of exported authorizations.
const (
	// ExportTTL is how long an exported token may be imported.
	ExportTTL = 300
	// MaxExportsPerUser caps a user's tokens waiting to be imported.
	MaxExportsPerUser = 16
	// TokenHashSize is the size of a token's hash (SHA-256).
	TokenHashSize = 32
)

type exportRecord struct {
	DC      int   `json:"dc"`
	Expires int64 `json:"expires"`
}

var errAuthBytesInvalid = Reject(400, "AUTH_BYTES_INVALID")

// ExportAuthorization records a token for importing the user's
// authorization at DC DC; only its hash is stored.
type ExportAuthorization struct {
	UserID    int64
	DC        int
	TokenHash []byte
}

// Kind implements Command.
func (ExportAuthorization) Kind() string { return "auth.export_authorization" }

func (c ExportAuthorization) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.TokenHash) != TokenHashSize || c.DC < 1 || c.DC > maxDCID {
		return nil, fmt.Errorf("%w: bad export", ErrCodec)
	}
	// Expired tokens go; a user holds at most MaxExportsPerUser.
	var live int
	var expired [][]byte
	err := tx.Iterate(key("xport", c.UserID), nil, false, func(k, v []byte) (bool, error) {
		var r exportRecord
		if json.Unmarshal(v, &r) != nil || r.Expires <= env.Now {
			expired = append(expired, append([]byte(nil), k...))
		} else {
			live++
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range expired {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	if live >= MaxExportsPerUser {
		return nil, Reject(420, "FLOOD_WAIT_60")
	}
	return nil, putJSON(tx, key("xport", c.UserID, c.TokenHash), exportRecord{DC: c.DC, Expires: env.Now + ExportTTL})
}

// ImportAuthorization takes an exported token at the user's home, for the
// key PermKeyID of DC KeyDC, and records that authorization among the
// user's. It answers the user's record.
type ImportAuthorization struct {
	UserID    int64
	TokenHash []byte
	KeyDC     int
	PermKeyID int64
	Device    Device
}

// Kind implements Command.
func (ImportAuthorization) Kind() string { return "auth.import_authorization" }

func (c ImportAuthorization) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.TokenHash) != TokenHashSize || c.PermKeyID == 0 || c.KeyDC == env.Layout().DC {
		return nil, errAuthBytesInvalid
	}
	k := key("xport", c.UserID, c.TokenHash)
	var r exportRecord
	found, err := getJSON(tx, k, &r)
	if err != nil {
		return nil, err
	}
	if !found || r.Expires <= env.Now || r.DC != c.KeyDC {
		return nil, errAuthBytesInvalid
	}
	if err := tx.Delete(k); err != nil {
		return nil, err
	}
	u, ok, err := GetUser(tx, c.UserID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errAuthBytesInvalid
	}
	if _, err := authorize(tx, env, c.UserID, c.PermKeyID, c.Device, c.KeyDC); err != nil {
		return nil, err
	}
	return u, nil
}

// GuestAuthorization signs this DC's key PermKeyID in as a user of
// another DC, after the user's home took an exported token for it.
type GuestAuthorization struct {
	UserID    int64
	PermKeyID int64
	Device    Device
}

// Kind implements Command.
func (GuestAuthorization) Kind() string { return "auth.guest_authorization" }

func (c GuestAuthorization) apply(tx *storage.Txn, env Env) (any, error) {
	if home := HomeDC(c.UserID); home == 0 || home == env.Layout().DC {
		return nil, fmt.Errorf("%w: guest of this DC", ErrCodec)
	}
	return authorize(tx, env, c.UserID, c.PermKeyID, c.Device, 0)
}

// RevokeGuest is the step home sends the DC of an authorization's key
// when it ends: the guest authorization there goes too.
type RevokeGuest struct {
	UserID    int64
	PermKeyID int64
	KeyDC     int
}

// Kind implements Command.
func (RevokeGuest) Kind() string { return "auth.revoke_guest" }

func (c RevokeGuest) apply(tx *storage.Txn, env Env) (any, error) {
	a, ok, err := GetAuthorization(tx, c.PermKeyID)
	if err != nil || !ok || a.UserID != c.UserID {
		return nil, err
	}
	return nil, DeleteAuthorization(tx, env, a)
}
