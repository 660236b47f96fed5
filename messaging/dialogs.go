package messaging

import (
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

// Dialog keys:
//
//	dlg/<uid>/<peer>                       Dialog
//	dord/<uid>/<date>/<top id>/<peer>      (empty) dialogs by last activity
//	dcount/<uid>                           number of dialogs
//	dpin/<uid>                             []Peer, pinned dialogs in order
//
// A dialog exists while it has a message or a draft. Its order key is its
// top message's (date, id), or (draft date, 0) for a dialog that has only
// a draft; top ids are unique in a box, so the key is unique too.

// Draft is an unsent text kept per dialog and synced to every device.
type Draft struct {
	Text      string `json:"text"`
	Entities  []byte `json:"entities,omitempty"`
	ReplyTo   int    `json:"reply_to,omitempty"`
	NoWebpage bool   `json:"no_webpage,omitempty"`
	Date      int64  `json:"date"`
}

// TL renders the draft; a nil draft is draftMessageEmpty.
func (d *Draft) TL() (tg.DraftMessageClass, error) {
	if d == nil {
		return &tg.DraftMessageEmpty{}, nil
	}
	ents, err := DecodeEntities(d.Entities)
	if err != nil {
		return nil, err
	}
	out := &tg.DraftMessage{Message: d.Text, Entities: ents, Date: int(d.Date), NoWebpage: d.NoWebpage}
	if d.ReplyTo != 0 {
		out.ReplyTo = &tg.InputReplyToMessage{ReplyToMsgID: d.ReplyTo}
	}
	return out, nil
}

// Dialog is one conversation in a user's list.
type Dialog struct {
	Peer            Peer   `json:"peer"`
	TopMessage      int    `json:"top"`
	TopDate         int64  `json:"top_date"`
	ReadInboxMaxID  int    `json:"read_in"`
	ReadOutboxMaxID int    `json:"read_out"`
	UnreadCount     int    `json:"unread"`
	Count           int    `json:"count"`
	Draft           *Draft `json:"draft,omitempty"`
}

// orderKey positions the dialog in dord.
func (d *Dialog) orderKey(uid int64) []byte {
	if d.TopMessage == 0 && d.Draft != nil {
		return key("dord", uid, d.Draft.Date, 0, d.Peer.key())
	}
	return key("dord", uid, d.TopDate, d.TopMessage, d.Peer.key())
}

// GetDialog loads uid's dialog with p.
func GetDialog(tx storage.Reader, uid int64, p Peer) (*Dialog, bool, error) {
	var d Dialog
	found, err := getJSON(tx, key("dlg", uid, p.key()), &d)
	if !found || err != nil {
		return nil, false, err
	}
	return &d, true, nil
}

// putDialog stores d, keeping the order index and the dialog count; old
// is the dialog as it was (nil for a new one).
func putDialog(tx *storage.Txn, uid int64, old, d *Dialog) error {
	if old == nil {
		n, _, err := getInt(tx, key("dcount", uid))
		if err != nil {
			return err
		}
		if err := putInt(tx, key("dcount", uid), n+1); err != nil {
			return err
		}
	} else if ok := string(old.orderKey(uid)) != string(d.orderKey(uid)); ok {
		if err := tx.Delete(old.orderKey(uid)); err != nil {
			return err
		}
	}
	if err := tx.Set(d.orderKey(uid), nil); err != nil {
		return err
	}
	return putJSON(tx, key("dlg", uid, d.Peer.key()), d)
}

// dropDialog deletes an empty dialog, its index entry and its pin.
func dropDialog(tx *storage.Txn, uid int64, d *Dialog) error {
	if err := tx.Delete(d.orderKey(uid)); err != nil {
		return err
	}
	if err := tx.Delete(key("dlg", uid, d.Peer.key())); err != nil {
		return err
	}
	n, _, err := getInt(tx, key("dcount", uid))
	if err != nil {
		return err
	}
	if err := putInt(tx, key("dcount", uid), max(n-1, 0)); err != nil {
		return err
	}
	pins, err := pinned(tx, uid)
	if err != nil {
		return err
	}
	if i := indexPeer(pins, d.Peer); i >= 0 {
		return putJSON(tx, key("dpin", uid), append(pins[:i], pins[i+1:]...))
	}
	return nil
}

// dialogAdd accounts for a new message m in owner's box.
func dialogAdd(tx *storage.Txn, owner int64, m *Message) error {
	d, ok, err := GetDialog(tx, owner, m.Peer)
	if err != nil {
		return err
	}
	var old *Dialog
	if ok {
		o := *d
		old = &o
	} else {
		d = &Dialog{Peer: m.Peer}
	}
	if m.ID > d.TopMessage {
		d.TopMessage, d.TopDate = m.ID, m.Date
	}
	d.Count++
	if !m.Out && m.ID > d.ReadInboxMaxID {
		d.UnreadCount++
	}
	return putDialog(tx, owner, old, d)
}

// dialogRemove accounts for the deletion of owner's copy m (already gone
// from hist): moves the top back, or drops a dialog left empty.
func dialogRemove(tx *storage.Txn, owner int64, m *Message) error {
	d, ok, err := GetDialog(tx, owner, m.Peer)
	if err != nil || !ok {
		return err
	}
	old := *d
	d.Count = max(d.Count-1, 0)
	if !m.Out && m.ID > d.ReadInboxMaxID {
		d.UnreadCount = max(d.UnreadCount-1, 0)
	}
	if m.ID == d.TopMessage {
		d.TopMessage, d.TopDate = 0, 0
		err := tx.Iterate(histPrefix(owner, m.Peer), key("hist", owner, m.Peer.key(), m.ID), true, func(k, v []byte) (bool, error) {
			e, err := decodeHist(k, v)
			if err != nil {
				return false, err
			}
			d.TopMessage, d.TopDate = e.ID, e.Date
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	if d.TopMessage == 0 && d.Draft == nil {
		return dropDialog(tx, owner, &old)
	}
	return putDialog(tx, owner, &old, d)
}

// pinned lists uid's pinned dialogs in order.
func pinned(tx storage.Reader, uid int64) ([]Peer, error) {
	var out []Peer
	_, err := getJSON(tx, key("dpin", uid), &out)
	return out, err
}

func indexPeer(ps []Peer, p Peer) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return -1
}

// PinnedDialogs lists uid's pinned dialogs, in pin order.
func PinnedDialogs(tx storage.Reader, uid int64) ([]*Dialog, error) {
	pins, err := pinned(tx, uid)
	if err != nil {
		return nil, err
	}
	out := make([]*Dialog, 0, len(pins))
	for _, p := range pins {
		d, ok, err := GetDialog(tx, uid, p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// IsPinned reports whether uid pinned the dialog with p.
func IsPinned(tx storage.Reader, uid int64, p Peer) (bool, error) {
	pins, err := pinned(tx, uid)
	return indexPeer(pins, p) >= 0, err
}

// DialogsQuery pages a user's dialog list as messages.getDialogs does:
// newest first; a page continues below the (date, id, peer) of the last
// dialog of the previous one. The first page starts with every pinned
// dialog, in pin order, on top of Limit others: then the last dialog of a
// page is never a pinned one, whose old top message would make a bad
// offset for the next page.
type DialogsQuery struct {
	OffsetDate int64
	OffsetID   int
	// OffsetPeer breaks ties between dialogs with the same (date, id):
	// only draft-only dialogs can tie.
	OffsetPeer *Peer
	Limit      int
	// ExcludePinned leaves pinned dialogs out of the first page; they are
	// never in later pages (they come first).
	ExcludePinned bool
}

// DialogsMax is the largest page of dialogs.
const DialogsMax = 100

// ListDialogs returns one page of uid's dialogs and the total number of
// dialogs.
func ListDialogs(tx storage.Reader, uid int64, q DialogsQuery) ([]*Dialog, int, error) {
	total, _, err := getInt(tx, key("dcount", uid))
	if err != nil {
		return nil, 0, err
	}
	limit := clampLimit(q.Limit, DialogsMax)
	pins, err := pinned(tx, uid)
	if err != nil {
		return nil, 0, err
	}
	var out []*Dialog
	first := q.OffsetDate == 0 && q.OffsetID == 0 && q.OffsetPeer == nil
	if first && !q.ExcludePinned {
		for _, p := range pins {
			d, ok, err := GetDialog(tx, uid, p)
			if err != nil {
				return nil, 0, err
			}
			if ok {
				out = append(out, d)
			}
		}
	}
	var start []byte
	if !first {
		date := q.OffsetDate
		if date == 0 {
			// An id alone: the message's own date places it.
			m, ok, err := GetMessage(tx, uid, q.OffsetID)
			if err != nil {
				return nil, 0, err
			}
			if ok {
				date = m.Date
			} else {
				date = 1<<62 - 1
			}
		}
		if q.OffsetPeer != nil {
			start = key("dord", uid, date, q.OffsetID, q.OffsetPeer.key())
		} else {
			start = key("dord", uid, date, q.OffsetID)
		}
	}
	prefix := key("dord", uid, "")
	npinned := len(out)
	err = tx.Iterate(prefix, start, true, func(k, _ []byte) (bool, error) {
		if len(out)-npinned >= limit {
			return false, nil
		}
		if start != nil && string(k) == string(start) {
			return true, nil // the offset dialog itself
		}
		if len(k) < 9 {
			return false, nil
		}
		pk := k[len(k)-9:]
		p := Peer{Kind: PeerKind(pk[0]), ID: int64(beUint64(pk[1:]))}
		if indexPeer(pins, p) >= 0 {
			return true, nil
		}
		d, ok, err := GetDialog(tx, uid, p)
		if err != nil || !ok {
			return err == nil, err
		}
		out = append(out, d)
		return true, nil
	})
	return out, int(total), err
}

// clampLimit applies Telegram's limit rule: 0 (or less) means a default
// of 20, and no page is larger than max.
func clampLimit(l, max int) int {
	if l <= 0 {
		return 20
	}
	return min(l, max)
}

// clearDraft removes uid's draft in dialog p, if any, and returns the
// updateDraftMessage for uid's other devices.
func clearDraft(tx *storage.Txn, uid int64, p Peer, auth int64) (Event, bool, error) {
	d, ok, err := GetDialog(tx, uid, p)
	if err != nil || !ok || d.Draft == nil {
		return Event{}, false, err
	}
	old := *d
	d.Draft = nil
	if d.TopMessage == 0 {
		err = dropDialog(tx, uid, &old)
	} else {
		err = putDialog(tx, uid, &old, d)
	}
	if err != nil {
		return Event{}, false, err
	}
	ev, err := draftEvent(uid, p, nil, auth)
	return ev, err == nil, err
}

func draftEvent(uid int64, p Peer, d *Draft, auth int64) (Event, error) {
	dm, err := d.TL()
	if err != nil {
		return Event{}, err
	}
	b, err := encodeTL(&tg.UpdateDraftMessage{Peer: p.TL(), Draft: dm})
	if err != nil {
		return Event{}, err
	}
	return Event{UserID: uid, Update: b, ExceptAuth: auth}, nil
}

// SaveDraft sets (or, with an empty text, clears) the user's draft in the
// dialog with Peer. Drafts are not in the pts log: other devices learn of
// them by push and from the dialog list.
type SaveDraft struct {
	User      int64
	Auth      int64
	Peer      Peer
	Text      string
	Entities  []byte
	ReplyTo   int
	NoWebpage bool
}

// Kind implements Command.
func (SaveDraft) Kind() string { return "messages.save_draft" }

func (c SaveDraft) apply(tx *storage.Txn, env Env) (any, error) {
	if c.Text == "" {
		ev, ok, err := clearDraft(tx, c.User, c.Peer, c.Auth)
		if err != nil || !ok {
			return nil, err
		}
		return Applied{Events: []Event{ev}}, nil
	}
	if err := CheckText(c.Text, c.Entities); err != nil {
		return nil, err
	}
	if err := checkRecipient(tx, c.User, c.Peer); err != nil && err != ErrYouBlockedUser && err != ErrUserIsBlocked {
		return nil, err
	}
	d, ok, err := GetDialog(tx, c.User, c.Peer)
	if err != nil {
		return nil, err
	}
	var old *Dialog
	if ok {
		o := *d
		old = &o
	} else {
		d = &Dialog{Peer: c.Peer}
	}
	d.Draft = &Draft{Text: c.Text, Entities: c.Entities, ReplyTo: c.ReplyTo, NoWebpage: c.NoWebpage, Date: env.Now}
	if err := putDialog(tx, c.User, old, d); err != nil {
		return nil, err
	}
	ev, err := draftEvent(c.User, c.Peer, d.Draft, c.Auth)
	if err != nil {
		return nil, err
	}
	return Applied{Events: []Event{ev}}, nil
}

// ToggleDialogPin pins or unpins the user's dialog with Peer. New pins go
// first, as in Telegram.
type ToggleDialogPin struct {
	User   int64
	Auth   int64
	Peer   Peer
	Pinned bool
}

// Kind implements Command.
func (ToggleDialogPin) Kind() string { return "messages.toggle_pin" }

func (c ToggleDialogPin) apply(tx *storage.Txn, env Env) (any, error) {
	if _, ok, err := GetDialog(tx, c.User, c.Peer); err != nil {
		return nil, err
	} else if !ok {
		return nil, ErrPeerInvalid
	}
	pins, err := pinned(tx, c.User)
	if err != nil {
		return nil, err
	}
	i := indexPeer(pins, c.Peer)
	switch {
	case c.Pinned && i >= 0, !c.Pinned && i < 0:
		return nil, nil
	case c.Pinned:
		if len(pins) >= PinnedDialogsMax {
			return nil, ErrPinnedTooMuch
		}
		pins = append([]Peer{c.Peer}, pins...)
	default:
		pins = append(pins[:i], pins[i+1:]...)
	}
	if err := putJSON(tx, key("dpin", c.User), pins); err != nil {
		return nil, err
	}
	b, err := encodeTL(&tg.UpdateDialogPinned{Pinned: c.Pinned, Peer: &tg.DialogPeer{Peer: c.Peer.TL()}})
	if err != nil {
		return nil, err
	}
	return Applied{Events: []Event{{UserID: c.User, Update: b, ExceptAuth: c.Auth}}}, nil
}
