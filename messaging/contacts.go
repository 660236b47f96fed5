package messaging

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

// Contact and block list keys:
//
//	contact/<owner>/<uid>        Contact: owner saved uid
//	contactn/<owner>             int64 number of owner's contacts
//	block/<owner>/<other>        int64 sequence: owner has blocked other
//	blockseq/<owner>/<seq>       Blocked, the block list in blocking order
//	blockn/<owner>               int64 count, for contacts.blockedSlice
//	blocknext/<owner>            int64 last sequence given out
const (
	// ContactsMax bounds one user's contact list; imports beyond it come
	// back in retry_contacts.
	ContactsMax = 10000
	// ImportMax bounds one contacts.importContacts call.
	ImportMax = 1000
)

var errContactIDInvalid = Reject(400, "CONTACT_ID_INVALID")

// IsBlocked reports whether owner has blocked other. Commands that deliver
// something from other to owner (messages, calls) check it and refuse with
// YOU_BLOCKED_USER / USER_IS_BLOCKED as Telegram does.
func IsBlocked(tx storage.Reader, owner, other int64) (bool, error) {
	_, ok, err := getInt(tx, key("block", owner, other))
	return ok, err
}

// Contact is one entry of a user's contact list, with the names the owner
// saved it under (empty: show the user's own names).
type Contact struct {
	UserID    int64  `json:"user_id"`
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	Date      int64  `json:"date"`
}

// GetContact returns owner's contact entry for uid.
func GetContact(tx storage.Reader, owner, uid int64) (*Contact, bool, error) {
	var c Contact
	found, err := getJSON(tx, key("contact", owner, uid), &c)
	if !found || err != nil {
		return nil, false, err
	}
	return &c, true, nil
}

// IsContact reports whether owner has uid in their contacts.
func IsContact(tx storage.Reader, owner, uid int64) (bool, error) {
	_, err := tx.Get(key("contact", owner, uid))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return false, err
}

// ListContacts returns owner's contacts in user id order (at most
// ContactsMax).
func ListContacts(tx storage.Reader, owner int64) ([]Contact, error) {
	var out []Contact
	err := tx.Iterate(key("contact", owner, ""), nil, false, func(k, v []byte) (bool, error) {
		var c Contact
		if _, err := getJSONBytes(v, &c); err != nil {
			return false, fmt.Errorf("decode contact %q: %w", k, err)
		}
		out = append(out, c)
		return len(out) < ContactsMax, nil
	})
	return out, err
}

func contactCount(tx storage.Reader, owner int64) (int64, error) {
	n, _, err := getInt(tx, key("contactn", owner))
	return n, err
}

// PhoneContact is one entry of an import: a phone and the names to save.
// UserID is the user the phone belongs to, found in the directory by
// ResolvePhones before the import is proposed (the directory and the
// contact list live in different groups); 0 skips the entry.
type PhoneContact struct {
	ClientID            int64
	Phone               string
	FirstName, LastName string
	UserID              int64
}

// ImportedContact pairs a client's id of an imported entry with the user
// it matched.
type ImportedContact struct {
	UserID, ClientID int64
}

// ImportResult is ImportContacts' result.
type ImportResult struct {
	Imported []ImportedContact
	// Retry lists client ids not imported because the list is full.
	Retry []int64
}

// ImportContacts adds the registered users among phone contacts to
// Owner's contacts (contacts.importContacts); known ones get their names
// updated. Unregistered phones are not remembered.
type ImportContacts struct {
	Owner    int64
	Contacts []PhoneContact
}

// Kind implements Command.
func (ImportContacts) Kind() string { return "contacts.import" }

func (c ImportContacts) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.Contacts) > ImportMax {
		return nil, fmt.Errorf("import of %d contacts: more than %d", len(c.Contacts), ImportMax)
	}
	n, err := contactCount(tx, c.Owner)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{}
	for _, pc := range c.Contacts {
		uid := pc.UserID
		if uid == 0 || uid == c.Owner {
			continue
		}
		old, had, err := GetContact(tx, c.Owner, uid)
		if err != nil {
			return nil, err
		}
		if !had && n >= ContactsMax {
			res.Retry = append(res.Retry, pc.ClientID)
			continue
		}
		ct := Contact{UserID: uid, FirstName: truncName(pc.FirstName), LastName: truncName(pc.LastName), Date: env.Now}
		if had {
			ct.Date = old.Date
		} else {
			n++
		}
		if err := putJSON(tx, key("contact", c.Owner, uid), ct); err != nil {
			return nil, err
		}
		res.Imported = append(res.Imported, ImportedContact{UserID: uid, ClientID: pc.ClientID})
	}
	return res, putInt(tx, key("contactn", c.Owner), n)
}

// ResolvePhones sets each entry's UserID from the directory's phone
// index (0 for a malformed or unregistered phone).
func ResolvePhones(tx storage.Reader, in []PhoneContact) ([]PhoneContact, error) {
	out := slices.Clone(in)
	for i := range out {
		out[i].UserID = 0
		phone, ok := NormalizePhone(out[i].Phone)
		if !ok {
			continue
		}
		uid, found, err := UserByPhone(tx, phone)
		if err != nil {
			return nil, err
		}
		if found {
			out[i].UserID = uid
		}
	}
	return out, nil
}

// truncName trims a saved name and cuts it to NameLengthMax characters:
// phone books hold whatever people typed, and an import should not fail
// for it.
func truncName(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "")
	if utf8.RuneCountInString(s) <= NameLengthMax {
		return s
	}
	return string([]rune(s)[:NameLengthMax])
}

// DeleteContacts removes users from Owner's contacts
// (contacts.deleteContacts). Its result is the ids that were contacts.
type DeleteContacts struct {
	Owner int64
	IDs   []int64
}

// Kind implements Command.
func (DeleteContacts) Kind() string { return "contacts.delete" }

func (c DeleteContacts) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.IDs) > ImportMax {
		return nil, fmt.Errorf("delete of %d contacts: more than %d", len(c.IDs), ImportMax)
	}
	n, err := contactCount(tx, c.Owner)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, id := range c.IDs {
		had, err := IsContact(tx, c.Owner, id)
		if err != nil {
			return nil, err
		}
		if !had {
			continue
		}
		if err := tx.Delete(key("contact", c.Owner, id)); err != nil {
			return nil, err
		}
		n--
		out = append(out, id)
	}
	return out, putInt(tx, key("contactn", c.Owner), max(n, 0))
}

// Blocked is one entry of a block list.
type Blocked struct {
	UserID int64 `json:"user_id"`
	Date   int64 `json:"date"`
}

// peerBlockedEvent tells the owner's other devices about a (un)block.
func peerBlockedEvent(owner, other, exceptAuth int64, blocked bool) (Event, error) {
	upd := &tg.UpdatePeerBlocked{Blocked: blocked, PeerID: &tg.PeerUser{UserID: other}}
	var b bin.Buffer
	if err := upd.Encode(&b); err != nil {
		return Event{}, err
	}
	return Event{UserID: owner, Update: b.Buf, ExceptAuth: exceptAuth}, nil
}

// Block adds Other to Owner's block list (contacts.block). Its result is
// true if Other was not blocked before; blocking twice changes nothing.
type Block struct {
	Owner, Other int64
	// Auth is the asking device; the owner's others get updatePeerBlocked.
	Auth int64
}

// Kind implements Command.
func (Block) Kind() string { return "contacts.block" }

func (c Block) apply(tx *storage.Txn, env Env) (any, error) {
	// That Other exists is the API's check: users live in the directory.
	if c.Other == c.Owner || c.Other == 0 {
		return nil, errContactIDInvalid
	}
	if blocked, err := IsBlocked(tx, c.Owner, c.Other); err != nil || blocked {
		return false, err
	}
	seq, _, err := getInt(tx, key("blocknext", c.Owner))
	if err != nil {
		return nil, err
	}
	seq++
	n, _, err := getInt(tx, key("blockn", c.Owner))
	if err != nil {
		return nil, err
	}
	for _, w := range []struct {
		k []byte
		v int64
	}{{key("blocknext", c.Owner), seq}, {key("blockn", c.Owner), n + 1}, {key("block", c.Owner, c.Other), seq}} {
		if err := putInt(tx, w.k, w.v); err != nil {
			return nil, err
		}
	}
	if err := putJSON(tx, key("blockseq", c.Owner, seq), Blocked{UserID: c.Other, Date: env.Now}); err != nil {
		return nil, err
	}
	ev, err := peerBlockedEvent(c.Owner, c.Other, c.Auth, true)
	if err != nil {
		return nil, err
	}
	evs, err := emit(tx, env, env.Layout().UserGroup(c.Owner), BlockedBy{User: c.Other, By: c.Owner, Blocked: true})
	if err != nil {
		return nil, err
	}
	return Applied{Result: true, Events: append([]Event{ev}, evs...)}, nil
}

// Unblock removes Other from Owner's block list (contacts.unblock). Its
// result is true if Other was blocked.
type Unblock struct {
	Owner, Other int64
	Auth         int64
}

// Kind implements Command.
func (Unblock) Kind() string { return "contacts.unblock" }

func (c Unblock) apply(tx *storage.Txn, env Env) (any, error) {
	seq, blocked, err := getInt(tx, key("block", c.Owner, c.Other))
	if err != nil || !blocked {
		return false, err
	}
	n, _, err := getInt(tx, key("blockn", c.Owner))
	if err != nil {
		return nil, err
	}
	if err := tx.Delete(key("block", c.Owner, c.Other)); err != nil {
		return nil, err
	}
	if err := tx.Delete(key("blockseq", c.Owner, seq)); err != nil {
		return nil, err
	}
	if err := putInt(tx, key("blockn", c.Owner), max(n-1, 0)); err != nil {
		return nil, err
	}
	ev, err := peerBlockedEvent(c.Owner, c.Other, c.Auth, false)
	if err != nil {
		return nil, err
	}
	evs, err := emit(tx, env, env.Layout().UserGroup(c.Owner), BlockedBy{User: c.Other, By: c.Owner})
	if err != nil {
		return nil, err
	}
	return Applied{Result: true, Events: append([]Event{ev}, evs...)}, nil
}

// BlockedBy is a block's step in the blocked user's group: it records
// (or, with Blocked false, forgets) that By blocked User, so that User's
// own sends can answer USER_IS_BLOCKED without reading By's group. By's
// block list stays the truth: DeliverMessage checks it again.
type BlockedBy struct {
	User, By int64
	Blocked  bool
}

// Kind implements Command.
func (BlockedBy) Kind() string { return "contacts.blocked_by" }

func (c BlockedBy) apply(tx *storage.Txn, env Env) (any, error) {
	return nil, setMark(tx, key("blockedby", c.User, c.By), c.Blocked)
}

// IsBlockedBy reports whether by blocked user, as user's own group knows
// it (from BlockedBy steps).
func IsBlockedBy(tx storage.Reader, user, by int64) (bool, error) {
	_, err := tx.Get(key("blockedby", user, by))
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ListBlocked returns owner's block list, most recently blocked first,
// skipping offset entries and returning at most limit, and the list's
// length. Skipping costs a key read per entry skipped.
func ListBlocked(tx storage.Reader, owner int64, offset, limit int) ([]Blocked, int, error) {
	n, _, err := getInt(tx, key("blockn", owner))
	if err != nil {
		return nil, 0, err
	}
	var out []Blocked
	if limit <= 0 || offset < 0 || int64(offset) >= n {
		return nil, int(n), nil
	}
	skip := offset
	err = tx.Iterate(key("blockseq", owner, ""), nil, true, func(k, v []byte) (bool, error) {
		if skip > 0 {
			skip--
			return true, nil
		}
		var b Blocked
		if _, err := getJSONBytes(v, &b); err != nil {
			return false, fmt.Errorf("decode blocked %q: %w", k, err)
		}
		out = append(out, b)
		return len(out) < limit, nil
	})
	return out, int(n), err
}
