package messaging

import (
	"strings"
	"unicode/utf8"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

// Profile limits, as Telegram's.
const (
	// NameLengthMax bounds first and last names, in characters.
	NameLengthMax = 64
	// AboutLengthMax bounds the bio.
	AboutLengthMax = 70
	// UsernameLengthMin and UsernameLengthMax bound usernames.
	UsernameLengthMin, UsernameLengthMax = 5, 32
)

var (
	errAboutTooLong        = Reject(400, "ABOUT_TOO_LONG")
	errUsernameInvalid     = Reject(400, "USERNAME_INVALID")
	errUsernameOccupied    = Reject(400, "USERNAME_OCCUPIED")
	errUsernameNotModified = Reject(400, "USERNAME_NOT_MODIFIED")
)

// ValidUsername reports whether s may be a username: 5 to 32 of
// [a-zA-Z0-9_], starting with a letter.
func ValidUsername(s string) bool {
	if len(s) < UsernameLengthMin || len(s) > UsernameLengthMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

// cleanName trims a name and checks its length; names are shown as given
// otherwise.
func cleanName(s string) (string, bool) {
	s = strings.TrimSpace(s)
	return s, utf8.ValidString(s) && utf8.RuneCountInString(s) <= NameLengthMax
}

// cleanNames checks a first (required) and last (optional) name.
func cleanNames(first, last string) (string, string, error) {
	first, ok := cleanName(first)
	if !ok || first == "" {
		return "", "", errFirstNameInvalid
	}
	last, ok = cleanName(last)
	if !ok {
		return "", "", errLastNameInvalid
	}
	return first, last, nil
}

// userNameEvent tells the user's other devices about a changed name or
// username (updateUserName carries no pts).
func userNameEvent(u *User, exceptAuth int64) (Event, error) {
	upd := &tg.UpdateUserName{UserID: u.ID, FirstName: u.FirstName, LastName: u.LastName}
	if u.Username != "" {
		upd.Usernames = []tg.Username{{Username: u.Username, Active: true, Editable: true}}
	} else {
		upd.Usernames = []tg.Username{}
	}
	var b bin.Buffer
	if err := upd.Encode(&b); err != nil {
		return Event{}, err
	}
	return Event{UserID: u.ID, Update: b.Buf, ExceptAuth: exceptAuth}, nil
}

// UpdateProfile changes a user's names and bio (account.updateProfile).
// Nil fields are left as they are. Its result is the *User.
type UpdateProfile struct {
	UserID                     int64
	FirstName, LastName, About *string
	// Auth is the perm key of the device asking; its siblings get
	// updateUserName.
	Auth int64
}

// Kind implements Command.
func (UpdateProfile) Kind() string { return "account.update_profile" }

func (c UpdateProfile) apply(tx *storage.Txn, env Env) (any, error) {
	u, ok, err := GetUser(tx, c.UserID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, Reject(400, "USER_ID_INVALID")
	}
	first, last := u.FirstName, u.LastName
	if c.FirstName != nil {
		first = *c.FirstName
	}
	if c.LastName != nil {
		last = *c.LastName
	}
	if u.FirstName, u.LastName, err = cleanNames(first, last); err != nil {
		return nil, err
	}
	if c.About != nil {
		about := strings.TrimSpace(*c.About)
		if !utf8.ValidString(about) || utf8.RuneCountInString(about) > AboutLengthMax {
			return nil, errAboutTooLong
		}
		u.About = about
	}
	if err := putJSON(tx, key("user", u.ID), u); err != nil {
		return nil, err
	}
	ev, err := userNameEvent(u, c.Auth)
	if err != nil {
		return nil, err
	}
	return Applied{Result: u, Events: []Event{ev}}, nil
}

// UpdateUsername sets or, with "", removes a user's username
// (account.updateUsername). Its result is the *User.
type UpdateUsername struct {
	UserID   int64
	Username string
	Auth     int64
	// Claimed says the federation's username DC took the name already
	// (ClaimUsername): only the user's record changes here.
	Claimed bool `json:",omitempty"`
}

// Kind implements Command.
func (UpdateUsername) Kind() string { return "account.update_username" }

func (c UpdateUsername) apply(tx *storage.Txn, env Env) (any, error) {
	if c.Username != "" && !ValidUsername(c.Username) {
		return nil, errUsernameInvalid
	}
	u, ok, err := GetUser(tx, c.UserID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, Reject(400, "USER_ID_INVALID")
	}
	if u.Username == c.Username {
		return nil, errUsernameNotModified
	}
	// Claimed: the username index is the federation's username DC's,
	// where the name was claimed; only the user's record changes here.
	if !c.Claimed {
		if c.Username != "" {
			owner, taken, err := UserByUsername(tx, c.Username)
			if err != nil {
				return nil, err
			}
			if taken && owner != u.ID {
				return nil, errUsernameOccupied
			}
		}
		if u.Username != "" {
			if err := tx.Delete(key("uname", strings.ToLower(u.Username))); err != nil {
				return nil, err
			}
		}
		if c.Username != "" {
			if err := putInt(tx, key("uname", strings.ToLower(c.Username)), u.ID); err != nil {
				return nil, err
			}
		}
	}
	u.Username = c.Username
	if err := putJSON(tx, key("user", u.ID), u); err != nil {
		return nil, err
	}
	ev, err := userNameEvent(u, c.Auth)
	if err != nil {
		return nil, err
	}
	return Applied{Result: u, Events: []Event{ev}}, nil
}

// ClaimUsername takes a username for a user of any DC of the federation,
// in the directory of the DC that keeps the federation's usernames: it
// is rejected with USERNAME_OCCUPIED when another user holds the name,
// and releases Old when it was the user's. The user's home DC then
// records the name in the user's record (UpdateUsername with Claimed).
type ClaimUsername struct {
	UserID   int64
	Username string
	Old      string
}

// Kind implements Command.
func (ClaimUsername) Kind() string { return "account.claim_username" }

func (c ClaimUsername) apply(tx *storage.Txn, env Env) (any, error) {
	if (c.Username != "" && !ValidUsername(c.Username)) || (c.Old != "" && !ValidUsername(c.Old)) {
		return nil, errUsernameInvalid
	}
	if c.Username != "" {
		owner, taken, err := UserByUsername(tx, c.Username)
		if err != nil {
			return nil, err
		}
		if taken && owner != c.UserID {
			return nil, errUsernameOccupied
		}
		if err := putInt(tx, key("uname", strings.ToLower(c.Username)), c.UserID); err != nil {
			return nil, err
		}
	}
	if c.Old != "" && !strings.EqualFold(c.Old, c.Username) {
		owner, taken, err := UserByUsername(tx, c.Old)
		if err != nil {
			return nil, err
		}
		if taken && owner == c.UserID {
			if err := tx.Delete(key("uname", strings.ToLower(c.Old))); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// SearchUsernames lists users whose username starts with prefix
// (case-insensitively), in username order, at most limit of them.
func SearchUsernames(tx storage.Reader, prefix string, limit int) ([]int64, error) {
	var out []int64
	if limit <= 0 {
		return nil, nil
	}
	err := tx.Iterate(key("uname", strings.ToLower(prefix)), nil, false, func(_, v []byte) (bool, error) {
		if len(v) == 8 {
			out = append(out, int64(beUint64(v)))
		}
		return len(out) < limit, nil
	})
	return out, err
}
