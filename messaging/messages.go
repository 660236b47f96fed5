package messaging

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

// Message keys. A private message exists as two copies, one in each
// participant's box, each with the box owner's own id and pts.
//
//	msg/<uid>/<id>                   Message, uid's copy
//	hist/<uid>/<peer>/<id>           histEntry: the dialog's index, by id
//	rid/<uid>/<random_id>            id of the message uid sent with random_id
//	dlv/<uid>/<from>/<from msg id>   id of uid's copy of from's message: makes
//	                                 delivery idempotent and maps a sender's
//	                                 id to the recipient's
//
// Dialog keys are in dialogs.go.

// Limits the state machine enforces whatever the caller checked.
const (
	// MessageLengthMax is the longest text, in UTF-16 code units.
	MessageLengthMax = 4096
	// EntitiesMax bounds the formatting entities of one text.
	EntitiesMax = 1024
	// ForwardMax is how many messages one forward may carry.
	ForwardMax = 100
	// DeleteMax is how many ids one deleteMessages may name.
	DeleteMax = 100
	// EditTimeLimit is how long after sending a message may be edited,
	// seconds (except in Saved Messages); announced in help.getConfig.
	EditTimeLimit = 172800
	// PinnedDialogsMax is how many dialogs a user may pin.
	PinnedDialogsMax = 5
)

// Domain refusals of the message commands, with Telegram's names. Nothing
// is written when a command returns one of them.
var (
	ErrMessageEmpty   = Reject(400, "MESSAGE_EMPTY")
	ErrMessageTooLong = Reject(400, "MESSAGE_TOO_LONG")
	// ErrMessageInvalid answers text that is not valid UTF-8: TL strings
	// are UTF-8, and a stored or replicated message must be exactly what
	// every reader decodes.
	ErrMessageInvalid        = Reject(400, "MESSAGE_INVALID")
	ErrMessageIDInvalid      = Reject(400, "MESSAGE_ID_INVALID")
	ErrMessageIDsEmpty       = Reject(400, "MESSAGE_IDS_EMPTY")
	ErrMessageNotModified    = Reject(400, "MESSAGE_NOT_MODIFIED")
	ErrMessageAuthorRequired = Reject(403, "MESSAGE_AUTHOR_REQUIRED")
	ErrMessageEditExpired    = Reject(400, "MESSAGE_EDIT_TIME_EXPIRED")
	ErrEntityBoundsInvalid   = Reject(400, "ENTITY_BOUNDS_INVALID")
	ErrPeerInvalid           = Reject(400, "PEER_ID_INVALID")
	ErrYouBlockedUser        = Reject(400, "YOU_BLOCKED_USER")
	ErrUserIsBlocked         = Reject(400, "USER_IS_BLOCKED")
	ErrRandomIDInvalid       = Reject(400, "RANDOM_ID_INVALID")
	ErrRandomIDDuplicate     = Reject(500, "RANDOM_ID_DUPLICATE")
	ErrReplyInvalid          = Reject(400, "REPLY_MESSAGE_ID_INVALID")
	ErrLimitInvalid          = Reject(400, "LIMIT_INVALID")
	ErrPinnedTooMuch         = Reject(400, "PINNED_DIALOGS_TOO_MUCH")
)

// PeerKind tells what a dialog's peer is. Only users exist yet; basic
// groups and channels get kinds of their own with their issues.
type PeerKind uint8

// Peer kinds.
const (
	PeerKindUser PeerKind = 1
)

// Peer names the other side of a dialog.
type Peer struct {
	Kind PeerKind `json:"k"`
	ID   int64    `json:"id"`
}

// UserPeer is the dialog with user id (Saved Messages when id is the owner).
func UserPeer(id int64) Peer { return Peer{Kind: PeerKindUser, ID: id} }

// key is the peer's 9-byte key part: kind, then the big-endian id.
func (p Peer) key() []byte { return append([]byte{byte(p.Kind)}, be64(p.ID)...) }

// TL is the peer as Telegram's Peer.
func (p Peer) TL() tg.PeerClass { return &tg.PeerUser{UserID: p.ID} }

// Forward is the origin of a forwarded message.
type Forward struct {
	// From is the original author.
	From int64 `json:"from,omitempty"`
	// Date is when the original was sent.
	Date int64 `json:"date"`
	// SavedFrom* name the message a copy in Saved Messages was saved from.
	SavedFromPeer  *Peer `json:"saved_from_peer,omitempty"`
	SavedFromMsgID int   `json:"saved_from_msg_id,omitempty"`
}

// Message is one copy of a message in its owner's box.
type Message struct {
	ID int `json:"id"`
	// Peer is the dialog the message is in, seen from the owner.
	Peer Peer `json:"peer"`
	// From is the author.
	From int64 `json:"from"`
	// Out is set on the author's own copy.
	Out      bool   `json:"out,omitempty"`
	Silent   bool   `json:"silent,omitempty"`
	Date     int64  `json:"date"`
	EditDate int64  `json:"edit_date,omitempty"`
	Text     string `json:"text"`
	// Entities is the TL vector of MessageEntity, kept as the client sent it.
	Entities []byte   `json:"entities,omitempty"`
	Fwd      *Forward `json:"fwd,omitempty"`
	ReplyTo  int      `json:"reply_to,omitempty"`
	// Pts is the owner's pts of the updateNewMessage that created the copy.
	Pts int `json:"pts"`
	// RandomID is the sender's random_id (author's copy only).
	RandomID int64 `json:"random_id,omitempty"`
	// PeerMsgID is, on a received copy, the id of the author's copy. The
	// author finds the recipient's copy through the dlv index instead, which
	// lives with the recipient's state.
	PeerMsgID int `json:"peer_msg_id,omitempty"`
}

// TL renders the copy as its owner sees it.
func (m *Message) TL() (*tg.Message, error) {
	out := &tg.Message{
		ID:       m.ID,
		Out:      m.Out,
		Silent:   m.Silent,
		FromID:   &tg.PeerUser{UserID: m.From},
		PeerID:   m.Peer.TL(),
		Date:     int(m.Date),
		Message:  m.Text,
		EditDate: int(m.EditDate),
	}
	if len(m.Entities) > 0 {
		ents, err := DecodeEntities(m.Entities)
		if err != nil {
			return nil, err
		}
		out.Entities = ents
	}
	if m.Fwd != nil {
		h := tg.MessageFwdHeader{Date: int(m.Fwd.Date)}
		if m.Fwd.From != 0 {
			h.FromID = &tg.PeerUser{UserID: m.Fwd.From}
		}
		if m.Fwd.SavedFromPeer != nil {
			h.SavedFromPeer = m.Fwd.SavedFromPeer.TL()
			h.SavedFromMsgID = m.Fwd.SavedFromMsgID
		}
		out.FwdFrom = h
	}
	if m.ReplyTo != 0 {
		out.ReplyTo = &tg.MessageReplyHeader{ReplyToMsgID: m.ReplyTo}
	}
	out.SetFlags()
	return out, nil
}

// UserIDs lists the users the message refers to, for the users vector
// that must accompany it.
func (m *Message) UserIDs() []int64 {
	ids := []int64{m.From}
	if m.Peer.Kind == PeerKindUser {
		ids = append(ids, m.Peer.ID)
	}
	if m.Fwd != nil {
		if m.Fwd.From != 0 {
			ids = append(ids, m.Fwd.From)
		}
		if p := m.Fwd.SavedFromPeer; p != nil && p.Kind == PeerKindUser {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// EncodeEntities encodes formatting entities as a TL vector.
func EncodeEntities(ents []tg.MessageEntityClass) ([]byte, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	var b bin.Buffer
	b.PutVectorHeader(len(ents))
	for _, e := range ents {
		if err := e.Encode(&b); err != nil {
			return nil, fmt.Errorf("encode entity: %w", err)
		}
	}
	return b.Buf, nil
}

// DecodeEntities decodes what EncodeEntities wrote.
func DecodeEntities(raw []byte) ([]tg.MessageEntityClass, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	b := &bin.Buffer{Buf: raw}
	n, err := b.VectorHeader()
	if err != nil {
		return nil, fmt.Errorf("decode entities: %w", err)
	}
	if n < 0 || n > EntitiesMax {
		return nil, fmt.Errorf("decode entities: %d entities", n)
	}
	out := make([]tg.MessageEntityClass, 0, n)
	for i := 0; i < n; i++ {
		e, err := tg.DecodeMessageEntity(b)
		if err != nil {
			return nil, fmt.Errorf("decode entity: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// UTF16Len is the length of s in UTF-16 code units, the unit of Telegram's
// text limits and entity offsets.
func UTF16Len(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r) // ranging yields valid runes: U+FFFD for bad bytes
	}
	return n
}

// CheckText validates a message text and its entities: non-empty, at most
// MessageLengthMax UTF-16 units, entities inside the text.
func CheckText(text string, entities []byte) error {
	if !utf8.ValidString(text) {
		return ErrMessageInvalid
	}
	if strings.TrimSpace(text) == "" {
		return ErrMessageEmpty
	}
	n := UTF16Len(text)
	if n > MessageLengthMax {
		return ErrMessageTooLong
	}
	ents, err := DecodeEntities(entities)
	if err != nil {
		return ErrEntityBoundsInvalid
	}
	for _, e := range ents {
		off, l := e.GetOffset(), e.GetLength()
		if off < 0 || l <= 0 || off+l > n {
			return ErrEntityBoundsInvalid
		}
	}
	return nil
}

// histEntry is the value of a hist key: what a scan needs without loading
// the message.
type histEntry struct {
	ID   int
	Out  bool
	Date int64
}

func encodeHist(m *Message) []byte {
	b := make([]byte, 9)
	if m.Out {
		b[0] = 1
	}
	copy(b[1:], be64(m.Date))
	return b
}

func decodeHist(k, v []byte) (histEntry, error) {
	if len(v) != 9 || len(k) < 8 {
		return histEntry{}, fmt.Errorf("bad history entry %q", k)
	}
	return histEntry{
		ID:   int(beUint64(k[len(k)-8:])),
		Out:  v[0] == 1,
		Date: int64(beUint64(v[1:])),
	}, nil
}

func histPrefix(uid int64, p Peer) []byte { return key("hist", uid, p.key(), "") }

// GetMessage loads uid's copy of message id.
func GetMessage(tx storage.Reader, uid int64, id int) (*Message, bool, error) {
	if id <= 0 {
		return nil, false, nil
	}
	var m Message
	found, err := getJSON(tx, key("msg", uid, id), &m)
	if !found || err != nil {
		return nil, false, err
	}
	return &m, true, nil
}

func putMessage(tx *storage.Txn, uid int64, m *Message) error {
	if err := putJSON(tx, key("msg", uid, m.ID), m); err != nil {
		return err
	}
	return tx.Set(key("hist", uid, m.Peer.key(), m.ID), encodeHist(m))
}

// boxDate is the date for a new entry in uid's box: the command's time, but
// never before the box's last date, so that dates grow with ids (history
// seeks by date rely on it) even if a later leader's clock is behind.
func boxDate(tx storage.Reader, uid, now int64) (int64, error) {
	s, err := GetState(tx, uid)
	if err != nil {
		return 0, err
	}
	return max(now, s.Date), nil
}

func encodeTL(e bin.Encoder) ([]byte, error) {
	var b bin.Buffer
	if err := e.Encode(&b); err != nil {
		return nil, err
	}
	return b.Buf, nil
}

// postMessage stores a new copy in owner's box: takes its id, date and
// pts, appends updateNewMessage to the owner's log and moves the dialog.
func postMessage(tx *storage.Txn, env Env, owner int64, m *Message, except int64) (Event, error) {
	// One read and one write of the owner's counters: the message id,
	// the box date (never before the box's last) and the pts.
	s, err := GetState(tx, owner)
	if err != nil {
		return Event{}, err
	}
	m.ID, m.Date = s.NextMsgID, max(env.Now, s.Date)
	s.NextMsgID++
	ev, err := appendUpdate(tx, owner, &s, m.Date, 1, func(pts int) ([]byte, error) {
		m.Pts = pts
		msg, err := m.TL()
		if err != nil {
			return nil, err
		}
		return encodeTL(&tg.UpdateNewMessage{Message: msg, Pts: pts, PtsCount: 1})
	})
	if err != nil {
		return Event{}, err
	}
	if err := putMessage(tx, owner, m); err != nil {
		return Event{}, err
	}
	if err := dialogAdd(tx, owner, m); err != nil {
		return Event{}, err
	}
	ev.ExceptAuth = except
	return ev, nil
}

// checkRecipient says whether from may write to user to, as far as from's
// own state tells.
func checkRecipient(tx storage.Reader, from int64, to Peer) error {
	if to.Kind != PeerKindUser {
		return ErrPeerInvalid
	}
	if to.ID == from {
		return nil
	}
	// The recipient's existence is the API's check (users live in the
	// directory). The recipient's block list lives with the recipient:
	// this group knows of it through BlockedBy steps, and DeliverMessage
	// checks the list itself, dropping what a block overtook.
	if b, err := IsBlocked(tx, from, to.ID); err != nil {
		return err
	} else if b {
		return ErrYouBlockedUser
	}
	if b, err := IsBlockedBy(tx, from, to.ID); err != nil {
		return err
	} else if b {
		return ErrUserIsBlocked
	}
	return nil
}

// MsgRef names a message by the box it lives in: message ID of Owner.
type MsgRef struct {
	Owner int64 `json:"owner"`
	ID    int   `json:"id"`
}

// SendMessage is one text message from From to To. It is keyed by
// (From, RandomID): a repeat returns the first result and writes nothing.
type SendMessage struct {
	From int64
	// Auth is the sending authorization: it learns the result from its
	// RPC answer, so it gets no push.
	Auth       int64
	To         Peer
	RandomID   int64
	Text       string
	Entities   []byte
	ReplyTo    int
	Silent     bool
	ClearDraft bool
}

// Sent is the result of SendMessage: the author's copy.
type Sent struct {
	Msg *Message
	// Duplicate is set when RandomID had been used: Msg is the first send's.
	Duplicate bool
}

// Kind implements Command.
func (SendMessage) Kind() string { return "messages.send" }

func (c SendMessage) apply(tx *storage.Txn, env Env) (any, error) {
	if err := CheckText(c.Text, c.Entities); err != nil {
		return nil, err
	}
	if m, dup, err := sentBefore(tx, c.From, c.RandomID); err != nil || dup {
		return Sent{Msg: m, Duplicate: true}, err
	}
	if err := checkRecipient(tx, c.From, c.To); err != nil {
		return nil, err
	}
	m := &Message{
		Peer: c.To, From: c.From, Out: true, Silent: c.Silent,
		Text: c.Text, Entities: c.Entities, RandomID: c.RandomID,
	}
	var reply MsgRef
	if c.ReplyTo != 0 {
		r, ok, err := GetMessage(tx, c.From, c.ReplyTo)
		if err != nil {
			return nil, err
		}
		if !ok || r.Peer != c.To {
			return nil, ErrReplyInvalid
		}
		m.ReplyTo = r.ID
		reply = MsgRef{Owner: c.From, ID: r.ID}
		if !r.Out {
			reply = MsgRef{Owner: c.To.ID, ID: r.PeerMsgID}
		}
	}
	evs, err := send(tx, env, m, c.Auth, reply)
	if err != nil {
		return nil, err
	}
	if c.ClearDraft {
		ev, ok, err := clearDraft(tx, c.From, c.To, c.Auth)
		if err != nil {
			return nil, err
		}
		if ok {
			evs = append(evs, ev)
		}
	}
	return Applied{Result: Sent{Msg: m}, Events: evs}, nil
}

// sentBefore returns the message From sent with randomID, if any.
func sentBefore(tx storage.Reader, from, randomID int64) (*Message, bool, error) {
	id, ok, err := getInt(tx, key("rid", from, randomID))
	if !ok || err != nil {
		return nil, false, err
	}
	m, ok, err := GetMessage(tx, from, int(id))
	if err != nil {
		return nil, true, err
	}
	if !ok {
		// Sent, then deleted: the first result is gone.
		return nil, true, ErrRandomIDDuplicate
	}
	return m, true, nil
}

// send posts the author's copy m (Out set) and delivers it. The delivery
// is the DeliverMessage step: in the same transaction when the recipient's
// box is in this group, else through the outbox.
func send(tx *storage.Txn, env Env, m *Message, auth int64, reply MsgRef) ([]Event, error) {
	ev, err := postMessage(tx, env, m.From, m, auth)
	if err != nil {
		return nil, err
	}
	if err := putInt(tx, key("rid", m.From, m.RandomID), int64(m.ID)); err != nil {
		return nil, err
	}
	evs := []Event{ev}
	if m.Peer.ID != m.From {
		d := DeliverMessage{
			To: m.Peer.ID, From: m.From, FromMsgID: m.ID,
			Text: m.Text, Entities: m.Entities, Fwd: m.Fwd, Silent: m.Silent, ReplyTo: reply,
		}
		dev, err := emit(tx, env, env.Layout().UserGroup(m.From), d)
		if err != nil {
			return nil, err
		}
		evs = append(evs, dev...)
	}
	return evs, nil
}

// DeliverMessage puts the recipient's copy of message FromMsgID of From
// into To's box. It is idempotent by (To, From, FromMsgID), so an outbox
// may retry it.
type DeliverMessage struct {
	To        int64
	From      int64
	FromMsgID int
	Text      string
	Entities  []byte
	Fwd       *Forward
	Silent    bool
	// ReplyTo is the replied message as the author named it.
	ReplyTo MsgRef
}

// Kind implements Command.
func (DeliverMessage) Kind() string { return "messages.deliver" }

func (d DeliverMessage) apply(tx *storage.Txn, env Env) (any, error) {
	m, evs, err := d.deliver(tx, env)
	if err != nil {
		return nil, err
	}
	return Applied{Result: m, Events: evs}, nil
}

func (d DeliverMessage) deliver(tx *storage.Txn, env Env) (*Message, []Event, error) {
	dk := key("dlv", d.To, d.From, d.FromMsgID)
	if id, ok, err := getInt(tx, dk); err != nil {
		return nil, nil, err
	} else if ok {
		m, _, err := GetMessage(tx, d.To, int(id))
		return m, nil, err
	}
	if b, err := IsBlocked(tx, d.To, d.From); err != nil || b {
		// Not delivered, as Telegram does: the author sees it sent.
		return nil, nil, err
	}
	m := &Message{
		Peer: UserPeer(d.From), From: d.From, Silent: d.Silent,
		Text: d.Text, Entities: d.Entities, Fwd: d.Fwd, PeerMsgID: d.FromMsgID,
	}
	switch {
	case d.ReplyTo.ID == 0:
	case d.ReplyTo.Owner == d.To:
		m.ReplyTo = d.ReplyTo.ID
	default:
		id, _, err := getInt(tx, key("dlv", d.To, d.ReplyTo.Owner, d.ReplyTo.ID))
		if err != nil {
			return nil, nil, err
		}
		m.ReplyTo = int(id)
	}
	if m.ReplyTo != 0 {
		if _, ok, err := GetMessage(tx, d.To, m.ReplyTo); err != nil {
			return nil, nil, err
		} else if !ok {
			m.ReplyTo = 0 // deleted on this side: the reply stands alone
		}
	}
	ev, err := postMessage(tx, env, d.To, m, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := putInt(tx, dk, int64(m.ID)); err != nil {
		return nil, nil, err
	}
	return m, []Event{ev}, nil
}

// ForwardMessages forwards messages IDs of From's dialog FromPeer to To,
// each keyed by its RandomIDs entry.
type ForwardMessages struct {
	From       int64
	Auth       int64
	FromPeer   Peer
	IDs        []int
	RandomIDs  []int64
	To         Peer
	DropAuthor bool
	Silent     bool
}

// Forwarded is the result of ForwardMessages: the author's new copies, in
// the order of the request, with the random ids they answer.
type Forwarded struct {
	Msgs      []*Message
	RandomIDs []int64
}

// Kind implements Command.
func (ForwardMessages) Kind() string { return "messages.forward" }

func (c ForwardMessages) apply(tx *storage.Txn, env Env) (any, error) {
	switch {
	case len(c.IDs) == 0:
		return nil, ErrMessageIDsEmpty
	case len(c.IDs) > ForwardMax:
		return nil, ErrLimitInvalid
	case len(c.IDs) != len(c.RandomIDs):
		return nil, ErrRandomIDInvalid
	}
	seen := make(map[int64]bool, len(c.RandomIDs))
	for _, r := range c.RandomIDs {
		if seen[r] {
			return nil, ErrRandomIDInvalid
		}
		seen[r] = true
	}
	if err := checkRecipient(tx, c.From, c.To); err != nil {
		return nil, err
	}
	var out Forwarded
	var evs []Event
	for i, id := range c.IDs {
		prev, dup, err := sentBefore(tx, c.From, c.RandomIDs[i])
		if err != nil {
			return nil, err
		}
		if dup {
			out.Msgs = append(out.Msgs, prev)
			out.RandomIDs = append(out.RandomIDs, c.RandomIDs[i])
			continue
		}
		src, ok, err := GetMessage(tx, c.From, id)
		if err != nil {
			return nil, err
		}
		if !ok || src.Peer != c.FromPeer {
			return nil, ErrMessageIDInvalid
		}
		m := &Message{
			Peer: c.To, From: c.From, Out: true, Silent: c.Silent,
			Text: src.Text, Entities: src.Entities, RandomID: c.RandomIDs[i],
		}
		if !c.DropAuthor {
			fwd := Forward{From: src.From, Date: src.Date}
			if src.Fwd != nil {
				fwd = Forward{From: src.Fwd.From, Date: src.Fwd.Date}
			}
			if c.To.ID == c.From {
				p := c.FromPeer
				fwd.SavedFromPeer, fwd.SavedFromMsgID = &p, src.ID
			}
			m.Fwd = &fwd
		}
		e, err := send(tx, env, m, c.Auth, MsgRef{})
		if err != nil {
			return nil, err
		}
		evs = append(evs, e...)
		out.Msgs = append(out.Msgs, m)
		out.RandomIDs = append(out.RandomIDs, c.RandomIDs[i])
	}
	return Applied{Result: out, Events: evs}, nil
}

// EditMessage replaces the text of the user's own message ID in dialog
// Peer, on both sides.
type EditMessage struct {
	User     int64
	Auth     int64
	Peer     Peer
	ID       int
	Text     string
	Entities []byte
}

// Kind implements Command.
func (EditMessage) Kind() string { return "messages.edit" }

func (c EditMessage) apply(tx *storage.Txn, env Env) (any, error) {
	m, ok, err := GetMessage(tx, c.User, c.ID)
	if err != nil {
		return nil, err
	}
	if !ok || m.Peer != c.Peer {
		return nil, ErrMessageIDInvalid
	}
	if !m.Out {
		return nil, ErrMessageAuthorRequired
	}
	if m.Fwd != nil && m.Peer.ID != c.User {
		return nil, ErrMessageIDInvalid // forwards keep their author's words
	}
	if m.Peer.ID != c.User && env.Now-m.Date > EditTimeLimit {
		return nil, ErrMessageEditExpired
	}
	if err := CheckText(c.Text, c.Entities); err != nil {
		return nil, err
	}
	if m.Text == c.Text && slices.Equal(m.Entities, c.Entities) {
		return nil, ErrMessageNotModified
	}
	ev, err := editCopy(tx, env, c.User, m, c.Text, c.Entities)
	if err != nil {
		return nil, err
	}
	ev.ExceptAuth = c.Auth
	evs := []Event{ev}
	if m.Peer.Kind == PeerKindUser && m.Peer.ID != c.User {
		pev, err := emit(tx, env, env.Layout().UserGroup(c.User), EditCopy{
			Owner: m.Peer.ID, Author: c.User, AuthorMsgID: m.ID, Text: c.Text, Entities: c.Entities,
		})
		if err != nil {
			return nil, err
		}
		evs = append(evs, pev...)
	}
	return Applied{Result: Edited{Msg: m, Pts: evs[0].Pts}, Events: evs}, nil
}

// EditCopy is EditMessage's step in the other participant's box: Owner's
// copy of Author's message AuthorMsgID gets the new text.
type EditCopy struct {
	Owner, Author int64
	AuthorMsgID   int
	Text          string
	Entities      []byte
}

// Kind implements Command.
func (EditCopy) Kind() string { return "messages.edit_copy" }

func (c EditCopy) apply(tx *storage.Txn, env Env) (any, error) {
	id, ok, err := getInt(tx, key("dlv", c.Owner, c.Author, c.AuthorMsgID))
	if err != nil || !ok {
		return nil, err
	}
	pm, ok, err := GetMessage(tx, c.Owner, int(id))
	if err != nil || !ok {
		return nil, err
	}
	ev, err := editCopy(tx, env, c.Owner, pm, c.Text, c.Entities)
	if err != nil {
		return nil, err
	}
	return Applied{Events: []Event{ev}}, nil
}

// Edited is the result of EditMessage: the editor's copy and the pts of
// its updateEditMessage.
type Edited struct {
	Msg *Message
	Pts int
}

func editCopy(tx *storage.Txn, env Env, owner int64, m *Message, text string, ents []byte) (Event, error) {
	date, err := boxDate(tx, owner, env.Now)
	if err != nil {
		return Event{}, err
	}
	m.Text, m.Entities, m.EditDate = text, ents, date
	ev, err := AppendUpdate(tx, owner, date, 1, func(pts int) ([]byte, error) {
		msg, err := m.TL()
		if err != nil {
			return nil, err
		}
		return encodeTL(&tg.UpdateEditMessage{Message: msg, Pts: pts, PtsCount: 1})
	})
	if err != nil {
		return Event{}, err
	}
	return ev, putJSON(tx, key("msg", owner, m.ID), m)
}

// Affected is the answer of reads and deletes: the caller's pts after the
// command and how many pts it took (0 when nothing changed).
type Affected struct {
	Pts, PtsCount int
}

// DeleteMessages deletes the user's copies of IDs; with Revoke, the other
// participants' copies too. Unknown ids are skipped.
type DeleteMessages struct {
	User   int64
	Auth   int64
	IDs    []int
	Revoke bool
}

// Kind implements Command.
func (DeleteMessages) Kind() string { return "messages.delete" }

func (c DeleteMessages) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.IDs) > DeleteMax {
		return nil, ErrLimitInvalid
	}
	var own []int
	var peers []int64                   // in first-seen order: deterministic
	theirs := map[int64]*DeleteCopies{} // peer → its copies to delete
	done := make(map[int]bool, len(c.IDs))
	for _, id := range c.IDs {
		if done[id] {
			continue
		}
		done[id] = true
		m, ok, err := GetMessage(tx, c.User, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if c.Revoke && m.Peer.Kind == PeerKindUser && m.Peer.ID != c.User && (m.Out || m.PeerMsgID != 0) {
			dc := theirs[m.Peer.ID]
			if dc == nil {
				dc = &DeleteCopies{Owner: m.Peer.ID, Author: c.User}
				theirs[m.Peer.ID] = dc
				peers = append(peers, m.Peer.ID)
			}
			if m.Out {
				dc.AuthorIDs = append(dc.AuthorIDs, m.ID)
			} else {
				dc.IDs = append(dc.IDs, m.PeerMsgID)
			}
		}
		if err := removeMessage(tx, c.User, m); err != nil {
			return nil, err
		}
		own = append(own, id)
	}
	if len(own) == 0 {
		s, err := GetState(tx, c.User)
		return Affected{Pts: s.Pts}, err
	}
	ev, err := appendDeletes(tx, env, c.User, own)
	if err != nil {
		return nil, err
	}
	ev.ExceptAuth = c.Auth
	evs := []Event{ev}
	for _, p := range peers {
		pev, err := emit(tx, env, env.Layout().UserGroup(c.User), *theirs[p])
		if err != nil {
			return nil, err
		}
		evs = append(evs, pev...)
	}
	return Applied{Result: Affected{Pts: evs[0].Pts, PtsCount: len(own)}, Events: evs}, nil
}

// DeleteCopies is a revoking DeleteMessages' step in the other
// participant's box: Owner's copies of Author's messages AuthorIDs (found
// through dlv/) and Owner's own messages IDs (Author's copies of which
// were revoked) are deleted.
type DeleteCopies struct {
	Owner, Author int64
	AuthorIDs     []int
	IDs           []int
}

// Kind implements Command.
func (DeleteCopies) Kind() string { return "messages.delete_copies" }

func (c DeleteCopies) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.AuthorIDs)+len(c.IDs) > DeleteMax {
		return nil, ErrLimitInvalid
	}
	ids := slices.Clone(c.IDs)
	for _, aid := range c.AuthorIDs {
		id, ok, err := getInt(tx, key("dlv", c.Owner, c.Author, aid))
		if err != nil {
			return nil, err
		}
		if ok {
			ids = append(ids, int(id))
		}
	}
	var gone []int
	seen := map[int]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		m, ok, err := GetMessage(tx, c.Owner, id)
		if err != nil {
			return nil, err
		}
		if !ok || m.Peer != UserPeer(c.Author) {
			continue
		}
		if err := removeMessage(tx, c.Owner, m); err != nil {
			return nil, err
		}
		gone = append(gone, id)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	ev, err := appendDeletes(tx, env, c.Owner, gone)
	if err != nil {
		return nil, err
	}
	return Applied{Events: []Event{ev}}, nil
}

func appendDeletes(tx *storage.Txn, env Env, owner int64, ids []int) (Event, error) {
	date, err := boxDate(tx, owner, env.Now)
	if err != nil {
		return Event{}, err
	}
	return AppendUpdate(tx, owner, date, len(ids), func(pts int) ([]byte, error) {
		return encodeTL(&tg.UpdateDeleteMessages{Messages: ids, Pts: pts, PtsCount: len(ids)})
	})
}

// removeMessage deletes owner's copy m and fixes its dialog.
func removeMessage(tx *storage.Txn, owner int64, m *Message) error {
	if err := tx.Delete(key("msg", owner, m.ID)); err != nil {
		return err
	}
	if err := tx.Delete(key("hist", owner, m.Peer.key(), m.ID)); err != nil {
		return err
	}
	return dialogRemove(tx, owner, m)
}

// ReadHistory marks the user's incoming messages of dialog Peer read up to
// MaxID (0: all). The author's side gets updateReadHistoryOutbox.
type ReadHistory struct {
	User  int64
	Auth  int64
	Peer  Peer
	MaxID int
}

// Kind implements Command.
func (ReadHistory) Kind() string { return "messages.read" }

// outboxScanMax bounds the walk back from a read position to the newest
// incoming message; a reader who wrote more than this many messages in a
// row without an answer only delays the author's read receipt.
const outboxScanMax = 10000

func (c ReadHistory) apply(tx *storage.Txn, env Env) (any, error) {
	unchanged := func() (any, error) {
		s, err := GetState(tx, c.User)
		return Affected{Pts: s.Pts}, err
	}
	d, ok, err := GetDialog(tx, c.User, c.Peer)
	if err != nil {
		return nil, err
	}
	if !ok || d.TopMessage == 0 {
		return unchanged()
	}
	maxID := c.MaxID
	if maxID <= 0 || maxID > d.TopMessage {
		maxID = d.TopMessage
	}
	if maxID <= d.ReadInboxMaxID {
		return unchanged()
	}
	// The newest incoming message at or below maxID: what the author sees
	// as read. Scanning also counts what stays unread above maxID.
	var newestIn *histEntry
	scanned := 0
	err = tx.Iterate(histPrefix(c.User, c.Peer), key("hist", c.User, c.Peer.key(), maxID), true, func(k, v []byte) (bool, error) {
		e, err := decodeHist(k, v)
		if err != nil {
			return false, err
		}
		scanned++
		if !e.Out {
			newestIn = &e
			return false, nil
		}
		return scanned < outboxScanMax, nil
	})
	if err != nil {
		return nil, err
	}
	unread, err := countIncoming(tx, c.User, c.Peer, maxID)
	if err != nil {
		return nil, err
	}
	old := *d
	d.ReadInboxMaxID, d.UnreadCount = maxID, unread
	if err := putDialog(tx, c.User, &old, d); err != nil {
		return nil, err
	}
	date, err := boxDate(tx, c.User, env.Now)
	if err != nil {
		return nil, err
	}
	ev, err := AppendUpdate(tx, c.User, date, 1, func(pts int) ([]byte, error) {
		return encodeTL(&tg.UpdateReadHistoryInbox{Peer: c.Peer.TL(), MaxID: maxID, StillUnreadCount: unread, Pts: pts, PtsCount: 1})
	})
	if err != nil {
		return nil, err
	}
	ev.ExceptAuth = c.Auth
	evs := []Event{ev}
	if newestIn != nil && c.Peer.ID != c.User {
		m, ok, err := GetMessage(tx, c.User, newestIn.ID)
		if err != nil {
			return nil, err
		}
		if ok && m.PeerMsgID != 0 {
			oev, err := emit(tx, env, env.Layout().UserGroup(c.User), ReadOutbox{Author: c.Peer.ID, Reader: c.User, MaxID: m.PeerMsgID})
			if err != nil {
				return nil, err
			}
			evs = append(evs, oev...)
		}
	}
	return Applied{Result: Affected{Pts: ev.Pts, PtsCount: 1}, Events: evs}, nil
}

// countIncoming counts owner's incoming messages in dialog p after id.
func countIncoming(tx storage.Reader, owner int64, p Peer, after int) (int, error) {
	n := 0
	err := tx.Iterate(histPrefix(owner, p), key("hist", owner, p.key(), after+1), false, func(k, v []byte) (bool, error) {
		e, err := decodeHist(k, v)
		if err != nil {
			return false, err
		}
		if !e.Out {
			n++
		}
		return true, nil
	})
	return n, err
}

// readOutbox records on the author's side that its messages up to maxID in
// dialog p were read.
func readOutbox(tx *storage.Txn, env Env, author int64, p Peer, maxID int) (Event, bool, error) {
	d, ok, err := GetDialog(tx, author, p)
	if err != nil || !ok || d.ReadOutboxMaxID >= maxID {
		return Event{}, false, err
	}
	old := *d
	d.ReadOutboxMaxID = maxID
	if err := putDialog(tx, author, &old, d); err != nil {
		return Event{}, false, err
	}
	date, err := boxDate(tx, author, env.Now)
	if err != nil {
		return Event{}, false, err
	}
	ev, err := AppendUpdate(tx, author, date, 1, func(pts int) ([]byte, error) {
		return encodeTL(&tg.UpdateReadHistoryOutbox{Peer: p.TL(), MaxID: maxID, Pts: pts, PtsCount: 1})
	})
	return ev, err == nil, err
}

// ReadOutbox is ReadHistory's step in the author's box: Reader read
// Author's messages up to MaxID (Author's ids).
type ReadOutbox struct {
	Author, Reader int64
	MaxID          int
}

// Kind implements Command.
func (ReadOutbox) Kind() string { return "messages.read_outbox" }

func (c ReadOutbox) apply(tx *storage.Txn, env Env) (any, error) {
	ev, changed, err := readOutbox(tx, env, c.Author, UserPeer(c.Reader), c.MaxID)
	if err != nil || !changed {
		return nil, err
	}
	return Applied{Events: []Event{ev}}, nil
}
