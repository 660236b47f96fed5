package messaging

import (
	"github.com/mtnode/mtnode/storage"
)

// Authorization ties a permanent auth key to the user signed in on it.
//
//	auth/<perm key id>           Authorization
//	uauth/<uid>/<perm key id>    (empty) index of a user's authorizations
type Authorization struct {
	PermKeyID int64  `json:"perm_key_id"`
	UserID    int64  `json:"user_id"`
	Created   int64  `json:"created"`
	Device    string `json:"device,omitempty"`
	Platform  string `json:"platform,omitempty"`
	App       string `json:"app,omitempty"`
	APIID     int    `json:"api_id,omitempty"`
	IP        string `json:"ip,omitempty"`
	// Hash identifies the authorization to account.resetAuthorization;
	// derived from env randomness when created, never 0.
	Hash int64 `json:"hash"`
	// KeyDC is the DC the key lives in when that is not this one: an
	// authorization imported there (transfer.go). Ending it ends the
	// guest authorization there too.
	KeyDC int `json:"key_dc,omitempty"`
}

// GetAuthorization returns the authorization of a permanent key.
func GetAuthorization(tx storage.Reader, permKeyID int64) (*Authorization, bool, error) {
	var a Authorization
	found, err := getJSON(tx, key("auth", permKeyID), &a)
	if !found || err != nil {
		return nil, false, err
	}
	return &a, true, nil
}

// PutAuthorization stores an authorization and indexes it under its user.
func PutAuthorization(tx *storage.Txn, env Env, a *Authorization) error {
	if err := putJSON(tx, key("auth", a.PermKeyID), a); err != nil {
		return err
	}
	if err := tx.Set(key("uauth", a.UserID, a.PermKeyID), nil); err != nil {
		return err
	}
	_, err := emit(tx, env, env.Layout().DirGroup(), DeviceIndex{User: a.UserID, Perm: a.PermKeyID, Present: true})
	return err
}

// DeleteAuthorization removes an authorization and its index entries.
func DeleteAuthorization(tx *storage.Txn, env Env, a *Authorization) error {
	if err := tx.Delete(key("auth", a.PermKeyID)); err != nil {
		return err
	}
	if err := tx.Delete(key("uauth", a.UserID, a.PermKeyID)); err != nil {
		return err
	}
	if a.KeyDC != 0 {
		if _, err := emit(tx, env, env.Layout().DirGroup(), RevokeGuest{UserID: a.UserID, PermKeyID: a.PermKeyID, KeyDC: a.KeyDC}); err != nil {
			return err
		}
	}
	_, err := emit(tx, env, env.Layout().DirGroup(), DeviceIndex{User: a.UserID, Perm: a.PermKeyID})
	return err
}

// DeviceIndex is an authorization's step in its user's group: that
// group's copy of the user's authorizations (dev/<uid>/<perm>), which
// the leader pushing the user's updates reads locally. The directory's
// uauth/ stays the truth for the directory's own commands.
type DeviceIndex struct {
	User, Perm int64
	Present    bool
}

// Kind implements Command.
func (DeviceIndex) Kind() string { return "auth.device_index" }

func (c DeviceIndex) apply(tx *storage.Txn, env Env) (any, error) {
	return nil, setMark(tx, key("dev", c.User, c.Perm), c.Present)
}

// UserDevices lists the permanent key ids signed in as uid, from uid's
// own group (DeviceIndex): what pushes go to.
func UserDevices(tx storage.Reader, uid int64) ([]int64, error) {
	return listPerms(tx, key("dev", uid, ""))
}

// UserAuthorizations lists the permanent key ids signed in as uid.
func UserAuthorizations(tx storage.Reader, uid int64) ([]int64, error) {
	return listPerms(tx, key("uauth", uid, ""))
}

func listPerms(tx storage.Reader, prefix []byte) ([]int64, error) {
	var out []int64
	err := tx.Iterate(prefix, nil, false, func(k, _ []byte) (bool, error) {
		if len(k) == len(prefix)+8 {
			out = append(out, int64(beUint64(k[len(prefix):])))
		}
		return len(out) < 10000, nil
	})
	return out, err
}
