package messaging

import (
	"strings"

	"github.com/mtnode/mtnode/storage"
)

// IDs carry their home DC: id = dc<<40 | sequence. Any node can route from
// an id alone, and ids stay below 2^52 so JavaScript clients keep them
// exact.
const idDCShift = 40

// UserID builds a user id from its home DC and sequence number.
func UserID(dc int, seq int64) int64 { return int64(dc)<<idDCShift | seq }

// HomeDC returns the DC an id was created in.
func HomeDC(id int64) int { return int(id >> idDCShift) }

// User is a registered account.
type User struct {
	ID        int64  `json:"id"`
	Phone     string `json:"phone"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name,omitempty"`
	Username  string `json:"username,omitempty"`
	About     string `json:"about,omitempty"`
	Created   int64  `json:"created"`
	// LastSeen is the last time one of the user's sessions made a call.
	LastSeen int64 `json:"last_seen,omitempty"`
}

// GetUser loads a user; found is false if there is none.
func GetUser(tx storage.Reader, id int64) (*User, bool, error) {
	var u User
	found, err := getJSON(tx, key("user", id), &u)
	if !found || err != nil {
		return nil, false, err
	}
	return &u, true, nil
}

// UserByPhone finds the user registered with a phone number (digits only).
func UserByPhone(tx storage.Reader, phone string) (int64, bool, error) {
	id, ok, err := getInt(tx, key("phone", phone))
	return id, ok, err
}

// UserByUsername finds a user by username, case-insensitively.
func UserByUsername(tx storage.Reader, username string) (int64, bool, error) {
	return getInt(tx, key("uname", strings.ToLower(username)))
}

// PutUser writes a user record and its phone index.
func PutUser(tx *storage.Txn, u *User) error {
	if err := putJSON(tx, key("user", u.ID), u); err != nil {
		return err
	}
	return putInt(tx, key("phone", u.Phone), u.ID)
}

// newUserID takes the next user id of the DC.
func newUserID(tx *storage.Txn, dc int) (int64, error) {
	seq, _, err := getInt(tx, key("seq", "user"))
	if err != nil {
		return 0, err
	}
	seq++
	if err := putInt(tx, key("seq", "user"), seq); err != nil {
		return 0, err
	}
	return UserID(dc, seq), nil
}
