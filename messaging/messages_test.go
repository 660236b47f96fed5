package messaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/storage"
)

// putUsersCmd registers users with one authorization each (perm key =
// 1000+uid sequence); sign-up proper lives in auth.go.
type putUsersCmd struct{ ids []int64 }

func (putUsersCmd) Kind() string { return "test.put_users" }

func (c putUsersCmd) apply(tx *storage.Txn, env Env) (any, error) {
	for _, id := range c.ids {
		u := &User{ID: id, Phone: fmt.Sprint(9996610000 + id&0xffff), FirstName: fmt.Sprint("u", id&0xffff), Created: env.Now}
		if err := PutUser(tx, u); err != nil {
			return nil, err
		}
		if err := PutAuthorization(tx, env, &Authorization{PermKeyID: authOf(id), UserID: id, Created: env.Now, Hash: 1}); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func authOf(uid int64) int64 { return 1000 + uid&0xffff }

// blockCmd makes owner block other, writing only the key IsBlocked reads.
type blockCmd struct{ owner, other int64 }

func (blockCmd) Kind() string { return "test.block" }

func (c blockCmd) apply(tx *storage.Txn, env Env) (any, error) {
	if err := putInt(tx, key("block", c.owner, c.other), 1); err != nil {
		return nil, err
	}
	return BlockedBy{User: c.other, By: c.owner, Blocked: true}.apply(tx, env)
}

type fixture struct {
	t   testing.TB
	m   *Machine
	db  *storage.DB
	rec *recordNotifier
	now int64
}

func newFixture(t testing.TB, users ...int64) *fixture {
	t.Helper()
	rec := &recordNotifier{}
	m, db := openMachine(t, rec)
	f := &fixture{t: t, m: m, db: db, rec: rec, now: 1_700_000_000}
	f.must(putUsersCmd{ids: users})
	return f
}

func (f *fixture) apply(c Command) (any, error) {
	f.now++
	return f.m.Apply(context.Background(), c, Env{Now: f.now})
}

func (f *fixture) must(c Command) any {
	f.t.Helper()
	res, err := f.apply(c)
	if err != nil {
		f.t.Fatalf("%s: %v", c.Kind(), err)
	}
	return res
}

// events returns and forgets the recorded events.
func (f *fixture) events() []Event {
	ev := f.rec.events
	f.rec.events = nil
	return ev
}

func (f *fixture) send(from, to int64, text string) *Message {
	f.t.Helper()
	rid := int64(f.now)*7919 + from
	return f.must(SendMessage{From: from, Auth: authOf(from), To: UserPeer(to), RandomID: rid, Text: text}).(Sent).Msg
}

func (f *fixture) view(fn func(tx storage.Reader) error) {
	f.t.Helper()
	if err := f.m.View(fn); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) state(uid int64) State {
	var s State
	f.view(func(tx storage.Reader) (err error) { s, err = GetState(tx, uid); return })
	return s
}

func (f *fixture) dialog(uid int64, p int64) *Dialog {
	var d *Dialog
	f.view(func(tx storage.Reader) (err error) { d, _, err = GetDialog(tx, uid, UserPeer(p)); return })
	return d
}

func (f *fixture) msg(uid int64, id int) *Message {
	var m *Message
	f.view(func(tx storage.Reader) (err error) { m, _, err = GetMessage(tx, uid, id); return })
	return m
}

// dump is every key and value of the messaging table.
func (f *fixture) dump() string {
	var b strings.Builder
	if err := f.db.Table("msg").Scan(func(k, v []byte) error {
		fmt.Fprintf(&b, "%x=%x\n", k, v)
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	return b.String()
}

func decodeEvent(t *testing.T, ev Event) tg.UpdateClass {
	t.Helper()
	u, err := tg.DecodeUpdate(&bin.Buffer{Buf: ev.Update})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func wantRPC(t *testing.T, err error, typ string) {
	t.Helper()
	if !tgerr.Is(err, typ) {
		t.Fatalf("error %v, want %s", err, typ)
	}
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("error %v does not wrap ErrRejected", err)
	}
}

var (
	alice = UserID(1, 1)
	bob   = UserID(1, 2)
	carol = UserID(1, 3)
)

func TestSendStoresBothCopies(t *testing.T) {
	f := newFixture(t, alice, bob)
	ents, _ := EncodeEntities([]tg.MessageEntityClass{&tg.MessageEntityBold{Offset: 0, Length: 5}})
	res := f.must(SendMessage{From: alice, Auth: authOf(alice), To: UserPeer(bob), RandomID: 42, Text: "hello bob", Entities: ents}).(Sent)
	if res.Duplicate || res.Msg.ID != 1 || res.Msg.Pts != 1 || !res.Msg.Out {
		t.Fatalf("sent %+v", res.Msg)
	}
	evs := f.events()
	if len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	if evs[0].UserID != alice || evs[0].ExceptAuth != authOf(alice) || evs[0].Pts != 1 {
		t.Fatalf("sender event %+v", evs[0])
	}
	if evs[1].UserID != bob || evs[1].ExceptAuth != 0 || evs[1].Pts != 1 {
		t.Fatalf("recipient event %+v", evs[1])
	}
	u := decodeEvent(t, evs[1]).(*tg.UpdateNewMessage)
	got := u.Message.(*tg.Message)
	if got.Out || got.Message != "hello bob" || got.PeerID.(*tg.PeerUser).UserID != alice || len(got.Entities) != 1 {
		t.Fatalf("recipient copy %+v", got)
	}
	bm := f.msg(bob, 1)
	if bm == nil || bm.PeerMsgID != 1 || bm.From != alice || !bytes.Equal(bm.Entities, ents) {
		t.Fatalf("bob's copy %+v", bm)
	}
	if d := f.dialog(bob, alice); d.TopMessage != 1 || d.UnreadCount != 1 || d.Count != 1 {
		t.Fatalf("bob's dialog %+v", d)
	}
	if d := f.dialog(alice, bob); d.TopMessage != 1 || d.UnreadCount != 0 {
		t.Fatalf("alice's dialog %+v", d)
	}

	// The same random_id again: the first result, nothing written.
	before := f.dump()
	again := f.must(SendMessage{From: alice, Auth: authOf(alice), To: UserPeer(bob), RandomID: 42, Text: "something else"}).(Sent)
	if !again.Duplicate || again.Msg.ID != 1 || again.Msg.Pts != 1 || again.Msg.Text != "hello bob" {
		t.Fatalf("duplicate %+v", again)
	}
	if len(f.events()) != 0 || f.dump() != before {
		t.Fatal("a duplicate send changed state or notified")
	}
}

func TestSendRejects(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.must(blockCmd{owner: carol, other: alice})
	f.must(blockCmd{owner: alice, other: bob})
	before := f.dump()
	cases := []struct {
		name string
		cmd  SendMessage
		err  string
	}{
		{"empty", SendMessage{From: alice, To: UserPeer(carol), Text: " \n "}, "MESSAGE_EMPTY"},
		{"4097", SendMessage{From: alice, To: UserPeer(carol), Text: strings.Repeat("x", 4097)}, "MESSAGE_TOO_LONG"},
		{"surrogates", SendMessage{From: alice, To: UserPeer(carol), Text: strings.Repeat("😀", 2049)}, "MESSAGE_TOO_LONG"},
		{"blocked by recipient", SendMessage{From: alice, To: UserPeer(carol), Text: "hi"}, "USER_IS_BLOCKED"},
		{"blocked recipient", SendMessage{From: alice, To: UserPeer(bob), Text: "hi"}, "YOU_BLOCKED_USER"},
		{"bad entity", SendMessage{From: bob, To: UserPeer(carol), Text: "hi", Entities: mustEnts(&tg.MessageEntityBold{Offset: 1, Length: 5})}, "ENTITY_BOUNDS_INVALID"},
		{"bad reply", SendMessage{From: bob, To: UserPeer(carol), Text: "hi", ReplyTo: 77}, "REPLY_MESSAGE_ID_INVALID"},
	}
	for i, c := range cases {
		c.cmd.RandomID = int64(i + 1)
		if _, err := f.apply(c.cmd); !tgerr.Is(err, c.err) {
			t.Fatalf("%s: %v, want %s", c.name, err, c.err)
		}
	}
	if f.dump() != before || len(f.events()) != 0 {
		t.Fatal("a rejected send changed state")
	}
	// 4096 units is the limit, and counts UTF-16 units.
	f.must(SendMessage{From: bob, To: UserPeer(carol), RandomID: 100, Text: strings.Repeat("😀", 2048)})
	f.must(SendMessage{From: bob, To: UserPeer(carol), RandomID: 101, Text: strings.Repeat("ж", 4096)})
}

func mustEnts(e ...tg.MessageEntityClass) []byte {
	b, err := EncodeEntities(e)
	if err != nil {
		panic(err)
	}
	return b
}

func TestSavedMessagesHaveOneCopy(t *testing.T) {
	f := newFixture(t, alice)
	m := f.send(alice, alice, "note to self")
	if !m.Out || m.Peer != UserPeer(alice) {
		t.Fatalf("saved %+v", m)
	}
	if evs := f.events(); len(evs) != 1 || evs[0].ExceptAuth != authOf(alice) {
		t.Fatalf("events %+v", evs)
	}
	if s := f.state(alice); s.Pts != 1 || s.NextMsgID != 2 {
		t.Fatalf("state %+v", s)
	}
	if d := f.dialog(alice, alice); d.Count != 1 || d.UnreadCount != 0 {
		t.Fatalf("dialog %+v", d)
	}
}

func TestIdsAndPtsArePerUser(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.send(alice, carol, "1")
	f.send(alice, carol, "2")
	m := f.send(alice, bob, "3")
	if m.ID != 3 || m.Pts != 3 {
		t.Fatalf("alice's third message %+v", m)
	}
	bm := f.msg(bob, 1)
	if bm == nil || bm.PeerMsgID != 3 || bm.Pts != 1 {
		t.Fatalf("bob's first message %+v", bm)
	}
	r := f.send(bob, alice, "reply")
	if r.ID != 2 || f.msg(alice, 4).PeerMsgID != 2 {
		t.Fatalf("reply %+v / %+v", r, f.msg(alice, 4))
	}
}

func TestReplyMapsToRecipientIDs(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.send(alice, carol, "pad") // alice's ids run ahead of bob's
	q := f.send(alice, bob, "question")
	a := f.must(SendMessage{From: bob, To: UserPeer(alice), RandomID: 9, Text: "answer", ReplyTo: 1}).(Sent).Msg
	if a.ReplyTo != 1 {
		t.Fatalf("bob's reply %+v", a)
	}
	if got := f.msg(alice, 3); got == nil || got.ReplyTo != q.ID {
		t.Fatalf("alice's copy of the reply %+v, want reply_to %d", got, q.ID)
	}
	// Replying to one's own message maps through the delivery index.
	f.must(SendMessage{From: alice, To: UserPeer(bob), RandomID: 10, Text: "again", ReplyTo: q.ID})
	if got := f.msg(bob, 3); got == nil || got.ReplyTo != 1 {
		t.Fatalf("bob's copy %+v, want reply_to 1", got)
	}
}

func TestDeliverIsIdempotent(t *testing.T) {
	f := newFixture(t, alice, bob)
	f.send(alice, bob, "once")
	f.events()
	before := f.dump()
	res := f.must(DeliverMessage{To: bob, From: alice, FromMsgID: 1, Text: "once"}).(*Message)
	if res.ID != 1 || f.dump() != before || len(f.events()) != 0 {
		t.Fatalf("redelivery wrote: %+v", res)
	}
}

func TestEdit(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.send(alice, carol, "pad")
	m := f.send(alice, bob, "teh typo")
	f.events()
	before := f.dump()
	for _, c := range []struct {
		cmd EditMessage
		err string
	}{
		{EditMessage{User: alice, Peer: UserPeer(bob), ID: m.ID, Text: "teh typo"}, "MESSAGE_NOT_MODIFIED"},
		{EditMessage{User: alice, Peer: UserPeer(bob), ID: 99, Text: "x"}, "MESSAGE_ID_INVALID"},
		{EditMessage{User: alice, Peer: UserPeer(carol), ID: m.ID, Text: "x"}, "MESSAGE_ID_INVALID"},
		{EditMessage{User: bob, Peer: UserPeer(alice), ID: 1, Text: "x"}, "MESSAGE_AUTHOR_REQUIRED"},
		{EditMessage{User: alice, Peer: UserPeer(bob), ID: m.ID, Text: ""}, "MESSAGE_EMPTY"},
		{EditMessage{User: alice, Peer: UserPeer(bob), ID: m.ID, Text: strings.Repeat("y", 4097)}, "MESSAGE_TOO_LONG"},
	} {
		_, err := f.apply(c.cmd)
		wantRPC(t, err, c.err)
	}
	if f.dump() != before {
		t.Fatal("rejected edit changed state")
	}
	ed := f.must(EditMessage{User: alice, Auth: authOf(alice), Peer: UserPeer(bob), ID: m.ID, Text: "the typo"}).(Edited)
	if res := ed.Msg; res.Text != "the typo" || res.EditDate == 0 || ed.Pts != f.state(alice).Pts {
		t.Fatalf("edited %+v", ed)
	}
	evs := f.events()
	if len(evs) != 2 || evs[0].UserID != alice || evs[0].ExceptAuth != authOf(alice) || evs[1].UserID != bob {
		t.Fatalf("events %+v", evs)
	}
	u := decodeEvent(t, evs[1]).(*tg.UpdateEditMessage)
	if got := u.Message.(*tg.Message); got.ID != 1 || got.Message != "the typo" || got.EditDate == 0 {
		t.Fatalf("bob's edit %+v", got)
	}
	if f.msg(bob, 1).Text != "the typo" {
		t.Fatal("bob's copy not edited")
	}
	// Too late, except in Saved Messages.
	f.now += EditTimeLimit + 10
	_, err := f.apply(EditMessage{User: alice, Peer: UserPeer(bob), ID: m.ID, Text: "late"})
	wantRPC(t, err, "MESSAGE_EDIT_TIME_EXPIRED")
}

func TestDelete(t *testing.T) {
	f := newFixture(t, alice, bob)
	m1 := f.send(alice, bob, "one")
	m2 := f.send(alice, bob, "two")
	m3 := f.send(bob, alice, "three") // alice's id 3, bob's id 3
	f.events()

	// Without revoke: only alice's copy goes.
	aff := f.must(DeleteMessages{User: alice, Auth: authOf(alice), IDs: []int{m2.ID, m2.ID, 77}}).(Affected)
	if aff.PtsCount != 1 || aff.Pts != f.state(alice).Pts {
		t.Fatalf("affected %+v", aff)
	}
	evs := f.events()
	if len(evs) != 1 || evs[0].UserID != alice || evs[0].ExceptAuth != authOf(alice) {
		t.Fatalf("events %+v", evs)
	}
	if f.msg(alice, m2.ID) != nil || f.msg(bob, 2) == nil {
		t.Fatal("delete without revoke")
	}
	if d := f.dialog(alice, bob); d.Count != 2 || d.TopMessage != 3 {
		t.Fatalf("alice's dialog %+v", d)
	}

	// Bob revokes alice's message 1 (his id 1) and his own (id 3).
	aff = f.must(DeleteMessages{User: bob, Auth: authOf(bob), IDs: []int{1, m3.ID}, Revoke: true}).(Affected)
	if aff.PtsCount != 2 {
		t.Fatalf("affected %+v", aff)
	}
	evs = f.events()
	if len(evs) != 2 || evs[1].UserID != alice || evs[1].PtsCount != 2 {
		t.Fatalf("events %+v", evs)
	}
	del := decodeEvent(t, evs[1]).(*tg.UpdateDeleteMessages)
	if fmt.Sprint(del.Messages) != fmt.Sprint([]int{m1.ID, 3}) {
		t.Fatalf("alice's deleted ids %v", del.Messages)
	}
	if d := f.dialog(alice, bob); d != nil {
		t.Fatalf("alice's emptied dialog still listed: %+v", d)
	}
	if d := f.dialog(bob, alice); d.TopMessage != 2 || d.Count != 1 || d.UnreadCount != 1 {
		t.Fatalf("bob's dialog %+v", d)
	}

	// Nothing to delete: pts unchanged, count 0.
	aff = f.must(DeleteMessages{User: alice, IDs: []int{1}}).(Affected)
	if aff.PtsCount != 0 || aff.Pts != f.state(alice).Pts {
		t.Fatalf("affected %+v", aff)
	}
	_, err := f.apply(DeleteMessages{User: alice, IDs: make([]int, DeleteMax+1)})
	wantRPC(t, err, "LIMIT_INVALID")
}

func TestReadHistory(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.send(alice, carol, "pad")
	f.send(alice, carol, "pad")
	for i := 0; i < 5; i++ {
		f.send(alice, bob, fmt.Sprint("m", i)) // alice ids 3..7, bob ids 1..5
	}
	f.send(bob, alice, "bob writes") // bob id 6
	f.events()
	if d := f.dialog(bob, alice); d.UnreadCount != 5 {
		t.Fatalf("bob unread %d", d.UnreadCount)
	}
	aff := f.must(ReadHistory{User: bob, Auth: authOf(bob), Peer: UserPeer(alice), MaxID: 3}).(Affected)
	if aff.PtsCount != 1 || aff.Pts != f.state(bob).Pts {
		t.Fatalf("affected %+v", aff)
	}
	evs := f.events()
	if len(evs) != 2 || evs[0].ExceptAuth != authOf(bob) || evs[1].UserID != alice {
		t.Fatalf("events %+v", evs)
	}
	in := decodeEvent(t, evs[0]).(*tg.UpdateReadHistoryInbox)
	if in.MaxID != 3 || in.StillUnreadCount != 2 {
		t.Fatalf("inbox %+v", in)
	}
	out := decodeEvent(t, evs[1]).(*tg.UpdateReadHistoryOutbox)
	if out.MaxID != 5 || out.Peer.(*tg.PeerUser).UserID != bob {
		t.Fatalf("outbox %+v, want max_id 5 (alice's id of bob's 3)", out)
	}
	if d := f.dialog(alice, bob); d.ReadOutboxMaxID != 5 {
		t.Fatalf("alice's dialog %+v", d)
	}
	// Reading everything (max_id 0); the newest is bob's own message, so
	// the receipt names alice's last message.
	f.must(ReadHistory{User: bob, Peer: UserPeer(alice)})
	evs = f.events()
	if d := f.dialog(bob, alice); d.UnreadCount != 0 || d.ReadInboxMaxID != 6 {
		t.Fatalf("bob's dialog %+v", d)
	}
	if len(evs) != 2 || decodeEvent(t, evs[1]).(*tg.UpdateReadHistoryOutbox).MaxID != 7 {
		t.Fatalf("events %+v", evs)
	}
	// Reading again changes nothing.
	before := f.dump()
	aff = f.must(ReadHistory{User: bob, Peer: UserPeer(alice), MaxID: 4}).(Affected)
	if aff.PtsCount != 0 || f.dump() != before {
		t.Fatalf("re-read: %+v", aff)
	}
}

func TestForward(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	orig := f.send(carol, alice, "news") // alice's id 1
	f.events()
	res := f.must(ForwardMessages{From: alice, Auth: authOf(alice), FromPeer: UserPeer(carol), IDs: []int{1}, RandomIDs: []int64{555}, To: UserPeer(bob)}).(Forwarded)
	if len(res.Msgs) != 1 || res.Msgs[0].Fwd == nil || res.Msgs[0].Fwd.From != carol || res.Msgs[0].Fwd.Date != f.msg(alice, 1).Date {
		t.Fatalf("forwarded %+v", res.Msgs[0])
	}
	bm := f.msg(bob, 1)
	if bm.Fwd == nil || bm.Fwd.From != carol || bm.Text != "news" || bm.From != alice {
		t.Fatalf("bob's copy %+v", bm)
	}
	// Forwarding the forward keeps the origin; into Saved Messages it
	// records where it was saved from.
	f.must(ForwardMessages{From: bob, FromPeer: UserPeer(alice), IDs: []int{1}, RandomIDs: []int64{1}, To: UserPeer(bob)})
	sm := f.msg(bob, 2)
	if sm.Fwd.From != carol || sm.Fwd.SavedFromPeer == nil || *sm.Fwd.SavedFromPeer != UserPeer(alice) || sm.Fwd.SavedFromMsgID != 1 {
		t.Fatalf("saved copy %+v", sm.Fwd)
	}
	ids := sm.UserIDs()
	if fmt.Sprint(ids) != fmt.Sprint([]int64{bob, bob, carol, alice}) {
		t.Fatalf("user ids %v", ids)
	}
	// A repeated random_id returns the first forward.
	again := f.must(ForwardMessages{From: alice, FromPeer: UserPeer(carol), IDs: []int{1}, RandomIDs: []int64{555}, To: UserPeer(bob)}).(Forwarded)
	if again.Msgs[0].ID != res.Msgs[0].ID {
		t.Fatalf("repeat %+v", again.Msgs[0])
	}
	before := f.dump()
	for _, c := range []struct {
		cmd ForwardMessages
		err string
	}{
		{ForwardMessages{From: alice, FromPeer: UserPeer(carol), To: UserPeer(bob)}, "MESSAGE_IDS_EMPTY"},
		{ForwardMessages{From: alice, FromPeer: UserPeer(carol), IDs: []int{1}, To: UserPeer(bob)}, "RANDOM_ID_INVALID"},
		{ForwardMessages{From: alice, FromPeer: UserPeer(carol), IDs: []int{1, 1}, RandomIDs: []int64{7, 7}, To: UserPeer(bob)}, "RANDOM_ID_INVALID"},
		{ForwardMessages{From: alice, FromPeer: UserPeer(bob), IDs: []int{1}, RandomIDs: []int64{8}, To: UserPeer(bob)}, "MESSAGE_ID_INVALID"},
		{ForwardMessages{From: bob, FromPeer: UserPeer(alice), IDs: []int{orig.ID + 50}, RandomIDs: []int64{8}, To: UserPeer(carol)}, "MESSAGE_ID_INVALID"},
		{ForwardMessages{From: alice, FromPeer: UserPeer(carol), IDs: make([]int, 101), RandomIDs: make([]int64, 101), To: UserPeer(bob)}, "LIMIT_INVALID"},
	} {
		_, err := f.apply(c.cmd)
		wantRPC(t, err, c.err)
	}
	if f.dump() != before {
		t.Fatal("rejected forward changed state")
	}
}

func TestDraftsAndPins(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.must(SaveDraft{User: alice, Auth: authOf(alice), Peer: UserPeer(bob), Text: "half a thought"})
	evs := f.events()
	if len(evs) != 1 || evs[0].Pts != 0 || evs[0].ExceptAuth != authOf(alice) {
		t.Fatalf("events %+v", evs)
	}
	if dm := decodeEvent(t, evs[0]).(*tg.UpdateDraftMessage).Draft.(*tg.DraftMessage); dm.Message != "half a thought" {
		t.Fatalf("draft %+v", dm)
	}
	d := f.dialog(alice, bob)
	if d == nil || d.Draft == nil || d.TopMessage != 0 {
		t.Fatalf("draft-only dialog %+v", d)
	}
	var list []*Dialog
	f.view(func(tx storage.Reader) (err error) { list, _, err = ListDialogs(tx, alice, DialogsQuery{}); return })
	if len(list) != 1 {
		t.Fatalf("dialogs %+v", list)
	}
	// Sending with clear_draft clears it and tells the other devices.
	f.must(SendMessage{From: alice, Auth: authOf(alice), To: UserPeer(bob), RandomID: 1, Text: "whole thought", ClearDraft: true})
	evs = f.events()
	if len(evs) != 3 {
		t.Fatalf("events %+v", evs)
	}
	if _, ok := decodeEvent(t, evs[2]).(*tg.UpdateDraftMessage).Draft.(*tg.DraftMessageEmpty); !ok {
		t.Fatal("draft not cleared")
	}
	if d := f.dialog(alice, bob); d.Draft != nil || d.TopMessage != 1 {
		t.Fatalf("dialog %+v", d)
	}
	// Clearing a draft-only dialog removes it.
	f.must(SaveDraft{User: alice, Peer: UserPeer(carol), Text: "x"})
	f.must(SaveDraft{User: alice, Peer: UserPeer(carol)})
	if f.dialog(alice, carol) != nil {
		t.Fatal("cleared draft-only dialog remains")
	}
	_, err := f.apply(ToggleDialogPin{User: alice, Peer: UserPeer(carol), Pinned: true})
	wantRPC(t, err, "PEER_ID_INVALID")
	f.events()
	f.must(ToggleDialogPin{User: alice, Auth: authOf(alice), Peer: UserPeer(bob), Pinned: true})
	if evs := f.events(); len(evs) != 1 || !decodeEvent(t, evs[0]).(*tg.UpdateDialogPinned).Pinned {
		t.Fatalf("pin events %+v", evs)
	}
}

func TestDialogListPinnedFirstAndPaged(t *testing.T) {
	const n = 25
	users := []int64{alice}
	for i := 0; i < n; i++ {
		users = append(users, UserID(1, int64(10+i)))
	}
	f := newFixture(t, users...)
	for _, u := range users[1:] {
		f.send(u, alice, "hi")
	}
	// Dialog 3 gets a newer message; dialogs 5 and 7 are pinned (7 first).
	f.send(alice, users[3], "bump")
	f.must(ToggleDialogPin{User: alice, Peer: UserPeer(users[5]), Pinned: true})
	f.must(ToggleDialogPin{User: alice, Peer: UserPeer(users[7]), Pinned: true})

	var got []int64
	q := DialogsQuery{Limit: 4}
	for page := 0; page < 20; page++ {
		var list []*Dialog
		var total int
		f.view(func(tx storage.Reader) (err error) { list, total, err = ListDialogs(tx, alice, q); return })
		if total != n {
			t.Fatalf("total %d", total)
		}
		if len(list) == 0 {
			break
		}
		for _, d := range list {
			got = append(got, d.Peer.ID)
		}
		last := list[len(list)-1]
		p := last.Peer
		q = DialogsQuery{Limit: 4, OffsetDate: last.TopDate, OffsetID: last.TopMessage, OffsetPeer: &p}
	}
	want := []int64{users[7], users[5], users[3]}
	for i := n; i >= 1; i-- {
		if i != 3 && i != 5 && i != 7 {
			want = append(want, users[i])
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
	// An id alone (offset_date 0) places the page too.
	var list []*Dialog
	top := f.dialog(alice, users[20]).TopMessage
	f.view(func(tx storage.Reader) (err error) {
		list, _, err = ListDialogs(tx, alice, DialogsQuery{OffsetID: top, Limit: 1})
		return
	})
	if len(list) != 1 || list[0].Peer.ID != users[19] {
		t.Fatalf("offset by id: %+v", list)
	}
	var excl []*Dialog
	f.view(func(tx storage.Reader) (err error) {
		excl, _, err = ListDialogs(tx, alice, DialogsQuery{ExcludePinned: true, Limit: 1})
		return
	})
	if excl[0].Peer.ID != users[3] {
		t.Fatalf("exclude_pinned: %+v", excl[0])
	}
}

func TestDeterministic(t *testing.T) {
	run := func() string {
		f := newFixture(t, alice, bob, carol)
		f.send(alice, bob, "a")
		f.send(bob, alice, "b")
		f.must(ForwardMessages{From: bob, FromPeer: UserPeer(alice), IDs: []int{1}, RandomIDs: []int64{3}, To: UserPeer(carol)})
		f.must(EditMessage{User: bob, Peer: UserPeer(alice), ID: 2, Text: "b2"})
		f.must(ReadHistory{User: alice, Peer: UserPeer(bob)})
		f.must(SaveDraft{User: carol, Peer: UserPeer(bob), Text: "d"})
		f.must(DeleteMessages{User: alice, IDs: []int{1, 2}, Revoke: true})
		return f.dump()
	}
	if a, b := run(), run(); a != b {
		t.Fatal("the same commands gave different states")
	}
}

func TestInvalidUTF8TextIsRefused(t *testing.T) {
	if err := CheckText("ok \xff", nil); !errors.Is(err, ErrMessageInvalid) {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	if err := CheckText("ok", nil); err != nil {
		t.Fatal(err)
	}
}
