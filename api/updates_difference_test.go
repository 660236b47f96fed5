package api

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// recorder keeps the events a machine commits.
type recorder struct {
	mu  sync.Mutex
	evs []messaging.Event
}

func (r *recorder) Notify(evs []messaging.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, evs...)
}

func (r *recorder) take() []messaging.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

// svcFixture is a Service over a real machine, called directly as the
// dispatcher would, with users signed up through the auth commands.
type svcFixture struct {
	t   *testing.T
	s   *Service
	m   *messaging.Machine
	rec *recorder
}

func newSvcFixture(t *testing.T) *svcFixture {
	t.Helper()
	db, err := storage.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rec := &recorder{}
	m := messaging.NewMachine(db.Table("msg"), rec)
	s := New(Options{DC: 1, Machine: Local(m), Access: messaging.NewAccessHashes([]byte("0123456789abcdef")), TestNumbers: true,
		Now: func() time.Time { return time.Unix(1_700_000_000, 0) }})
	return &svcFixture{t: t, s: s, m: m, rec: rec}
}

func (f *svcFixture) apply(cmd messaging.Command) any {
	f.t.Helper()
	res, err := f.s.applyCommand(context.Background(), cmd.Kind(), cmd)
	if err != nil {
		f.t.Fatalf("%s: %v", cmd.Kind(), err)
	}
	return res
}

// signUp registers a test number on permanent key perm.
func (f *svcFixture) signUp(phone string, perm int64) int64 {
	f.t.Helper()
	sent := f.apply(messaging.SendCode{Phone: phone, Length: 5, TTL: 300, TestNumbers: true}).(*messaging.SentCode)
	in := f.apply(messaging.SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: perm}).(*messaging.SignInResult)
	if !in.SignUpRequired {
		f.t.Fatalf("sign in: %+v", in)
	}
	up := f.apply(messaging.SignUp{Phone: phone, Hash: sent.Hash, FirstName: "U" + phone[len(phone)-2:], DC: 1, PermKeyID: perm}).(*messaging.SignInResult)
	return up.User.ID
}

// as is a context for a call made on permanent key perm.
func as(perm int64) context.Context {
	return context.WithValue(context.Background(), ctxKey{}, &protocol.Call{AuthKeyID: perm, PermKeyID: perm})
}

func (f *svcFixture) peerOf(viewer, uid int64) *tg.InputPeerUser {
	return &tg.InputPeerUser{UserID: uid, AccessHash: f.s.opts.Access.For(viewer, uid)}
}

func (f *svcFixture) send(perm int64, to *tg.InputPeerUser, text string, rid int64) *tg.UpdateShortSentMessage {
	f.t.Helper()
	res, err := f.s.messagesSendMessage(as(perm), &tg.MessagesSendMessageRequest{Peer: to, Message: text, RandomID: rid})
	if err != nil {
		f.t.Fatal(err)
	}
	return res.(*tg.UpdateShortSentMessage)
}

func TestRenderEventForms(t *testing.T) {
	f := newSvcFixture(t)
	const pa, pb, pc = 11, 12, 13
	a, b, c := f.signUp("9996610001", pa), f.signUp("9996610002", pb), f.signUp("9996610003", pc)
	f.rec.take()
	render := func(ev messaging.Event) any {
		out, err := f.s.RenderEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	f.send(pa, f.peerOf(a, b), "hi", 1)
	evs := f.rec.take()
	if len(evs) != 2 || evs[0].ExceptAuth != pa {
		t.Fatalf("events %+v", evs)
	}
	own, ok := render(evs[0]).(*tg.UpdateShortMessage)
	if !ok || !own.Out || own.UserID != b || own.Message != "hi" || own.Pts != 1 {
		t.Fatalf("sender's other devices get %+v", render(evs[0]))
	}
	in, ok := render(evs[1]).(*tg.UpdateShortMessage)
	if !ok || in.Out || in.UserID != a || in.ID != 1 {
		t.Fatalf("recipient gets %+v", render(evs[1]))
	}

	// A forward names a third user: it comes with the users.
	if _, err := f.s.messagesForwardMessages(as(pb), &tg.MessagesForwardMessagesRequest{
		FromPeer: f.peerOf(b, a), ID: []int{1}, RandomID: []int64{5}, ToPeer: f.peerOf(b, c),
	}); err != nil {
		t.Fatal(err)
	}
	evs = f.rec.take()
	full, ok := render(evs[1]).(*tg.Updates)
	if !ok || len(full.Users) != 2 {
		t.Fatalf("forward pushed as %+v", render(evs[1]))
	}
	for _, u := range full.Users {
		if u := u.(*tg.User); u.AccessHash != f.s.opts.Access.For(c, u.ID) {
			t.Fatalf("user %d rendered with another viewer's hash", u.ID)
		}
	}

	// Read receipts carry pts: updates with users.
	if _, err := f.s.messagesReadHistory(as(pb), &tg.MessagesReadHistoryRequest{Peer: f.peerOf(b, a)}); err != nil {
		t.Fatal(err)
	}
	evs = f.rec.take()
	if len(evs) != 2 || evs[1].UserID != a {
		t.Fatalf("read events %+v", evs)
	}
	out, ok := render(evs[1]).(*tg.Updates)
	if !ok || len(out.Users) != 1 {
		t.Fatalf("outbox pushed as %+v", render(evs[1]))
	}
	if r := out.Updates[0].(*tg.UpdateReadHistoryOutbox); r.MaxID != 1 {
		t.Fatalf("outbox %+v", r)
	}

	// Typing: updateShort, nothing stored.
	if _, err := f.s.messagesSetTyping(as(pa), &tg.MessagesSetTypingRequest{Peer: f.peerOf(a, b), Action: &tg.SendMessageTypingAction{}}); err != nil {
		t.Fatal(err)
	}
	evs = f.rec.take()
	if len(evs) != 1 || evs[0].Pts != 0 || evs[0].UserID != b {
		t.Fatalf("typing events %+v", evs)
	}
	if s, ok := render(evs[0]).(*tg.UpdateShort); !ok || s.Update.(*tg.UpdateUserTyping).UserID != a {
		t.Fatalf("typing pushed as %+v", render(evs[0]))
	}
}

func (f *svcFixture) diff(perm int64, req *tg.UpdatesGetDifferenceRequest) tg.UpdatesDifferenceClass {
	f.t.Helper()
	d, err := f.s.updatesGetDifference(as(perm), req)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func TestGetDifference(t *testing.T) {
	f := newSvcFixture(t)
	const pa, pb = 21, 22
	a, b := f.signUp("9996610001", pa), f.signUp("9996610002", pb)
	toB := f.peerOf(a, b)
	for i := 0; i < 150; i++ {
		f.send(pa, toB, fmt.Sprintf("m%d", i), int64(i+1))
	}
	// B's log: 150 messages; then A edits B's 10th and revokes the 20th.
	if _, err := f.s.messagesEditMessage(as(pa), &tg.MessagesEditMessageRequest{Peer: toB, ID: 10, Message: "m9 edited"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.messagesDeleteMessages(as(pa), &tg.MessagesDeleteMessagesRequest{ID: []int{20}, Revoke: true}); err != nil {
		t.Fatal(err)
	}
	st, err := f.s.updatesGetState(as(pb))
	if err != nil || st.Pts != 152 {
		t.Fatalf("state %+v %v", st, err)
	}

	sl, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: 0, Date: 1}).(*tg.UpdatesDifferenceSlice)
	if !ok || sl.IntermediateState.Pts != differenceMax || len(sl.OtherUpdates) != 0 {
		t.Fatalf("first page: %T %+v", sl, sl)
	}
	// Messages as they are now: 10 edited, 20 gone.
	if len(sl.NewMessages) != 99 {
		t.Fatalf("%d new messages", len(sl.NewMessages))
	}
	if m := sl.NewMessages[9].(*tg.Message); m.Message != "m9 edited" || m.ID != 10 {
		t.Fatalf("message 10: %+v", m)
	}
	if len(sl.Users) != 1 || sl.Users[0].(*tg.User).ID != a {
		t.Fatalf("users %+v", sl.Users)
	}
	d, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: sl.IntermediateState.Pts}).(*tg.UpdatesDifference)
	if !ok || d.State.Pts != 152 || len(d.NewMessages) != 50 || len(d.OtherUpdates) != 2 {
		t.Fatalf("second page: %T %+v", d, d)
	}
	if e := d.OtherUpdates[0].(*tg.UpdateEditMessage); e.Pts != 151 {
		t.Fatalf("edit %+v", e)
	}
	if del := d.OtherUpdates[1].(*tg.UpdateDeleteMessages); del.Pts != 152 || del.Messages[0] != 20 {
		t.Fatalf("delete %+v", del)
	}

	if _, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: 152}).(*tg.UpdatesDifferenceEmpty); !ok {
		t.Fatal("up to date: not differenceEmpty")
	}
	if tl, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: 100, PtsTotalLimit: 10}).(*tg.UpdatesDifferenceTooLong); !ok || tl.Pts != 152 {
		t.Fatalf("pts_total_limit: %+v", tl)
	}
	if tl, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: 999}).(*tg.UpdatesDifferenceTooLong); !ok || tl.Pts != 152 {
		t.Fatalf("ahead of the log: %+v", tl)
	}
	if sl, ok := f.diff(pb, &tg.UpdatesGetDifferenceRequest{Pts: 140, PtsLimit: 5}).(*tg.UpdatesDifferenceSlice); !ok || sl.IntermediateState.Pts != 145 {
		t.Fatalf("pts_limit: %+v", sl)
	}
	// A's own log: 150 sends, the edit, the delete.
	if d, ok := f.diff(pa, &tg.UpdatesGetDifferenceRequest{Pts: 150}).(*tg.UpdatesDifference); !ok || len(d.OtherUpdates) != 2 {
		t.Fatalf("sender's difference %+v", d)
	}
	// Signed out keys get nothing.
	_, err = f.s.updatesGetDifference(as(99), &tg.UpdatesGetDifferenceRequest{Pts: 1})
	if !tgerr.Is(err, "AUTH_KEY_UNREGISTERED") {
		t.Fatalf("no authorization: %v", err)
	}
}
