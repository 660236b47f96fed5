package node

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/telegram/updates"
	"github.com/gotd/td/telegram/updates/hook"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// memUpdates is a gotd updates state and user access hash store that
// outlives a client, as an app's database outlives its process.
type memUpdates struct {
	mu     sync.Mutex
	states map[int64]updates.State
	hashes map[[2]int64]int64
}

func newMemUpdates() *memUpdates {
	return &memUpdates{states: map[int64]updates.State{}, hashes: map[[2]int64]int64{}}
}

var errNoState = errors.New("no state")

func (m *memUpdates) GetState(_ context.Context, uid int64) (updates.State, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[uid]
	return s, ok, nil
}

func (m *memUpdates) SetState(_ context.Context, uid int64, s updates.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[uid] = s
	return nil
}

func (m *memUpdates) set(uid int64, f func(*updates.State)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[uid]
	if !ok {
		return errNoState
	}
	f(&s)
	m.states[uid] = s
	return nil
}

func (m *memUpdates) SetPts(_ context.Context, uid int64, v int) error {
	return m.set(uid, func(s *updates.State) { s.Pts = v })
}
func (m *memUpdates) SetQts(_ context.Context, uid int64, v int) error {
	return m.set(uid, func(s *updates.State) { s.Qts = v })
}
func (m *memUpdates) SetDate(_ context.Context, uid int64, v int) error {
	return m.set(uid, func(s *updates.State) { s.Date = v })
}
func (m *memUpdates) SetSeq(_ context.Context, uid int64, v int) error {
	return m.set(uid, func(s *updates.State) { s.Seq = v })
}
func (m *memUpdates) SetDateSeq(_ context.Context, uid int64, d, q int) error {
	return m.set(uid, func(s *updates.State) { s.Date, s.Seq = d, q })
}
func (m *memUpdates) GetChannelPts(context.Context, int64, int64) (int, bool, error) {
	return 0, false, nil
}
func (m *memUpdates) SetChannelPts(context.Context, int64, int64, int) error { return nil }
func (m *memUpdates) ForEachChannels(context.Context, int64, func(context.Context, int64, int) error) error {
	return nil
}

func (m *memUpdates) SetUserAccessHash(_ context.Context, uid, target, hash int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hashes[[2]int64{uid, target}] = hash
	return nil
}

func (m *memUpdates) GetUserAccessHash(_ context.Context, uid, target int64) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hashes[[2]int64{uid, target}]
	return h, ok, nil
}

// seen is what a device's update handler got, after gotd's gap manager.
type seen struct {
	mu      sync.Mutex
	msgs    []*tg.Message // updateNewMessage, in dispatch order
	edits   []*tg.Message
	deletes [][]int
	readOut []*tg.UpdateReadHistoryOutbox
	readIn  []*tg.UpdateReadHistoryInbox
	drafts  []*tg.UpdateDraftMessage
	typing  []*tg.UpdateUserTyping
	users   map[int64]*tg.User
	// pushes counts what the server pushed, before the gap manager, by
	// TL type name (gotd has already turned short messages into
	// updateShort).
	pushes map[string]int
	// ownEcho counts pushed outgoing messages: the sending device must get
	// none of its own.
	ownEcho int
}

func (s *seen) lock() func() { s.mu.Lock(); return s.mu.Unlock }

func (s *seen) addUsers(e tg.Entities) {
	for id, u := range e.Users {
		s.users[id] = u
	}
}

// device is one app install: a session file, an updates store and what it
// has seen survive restarts.
type device struct {
	name    string
	n       *Node
	session string
	store   *memUpdates
	seen    *seen

	c       *telegram.Client
	api     *tg.Client
	self    *tg.User
	cancel  context.CancelFunc
	done    chan error
	cleanup bool
}

func newDevice(t *testing.T, n *Node, name string) *device {
	return &device{
		name: name, n: n,
		session: filepath.Join(t.TempDir(), name+".json"),
		store:   newMemUpdates(),
		seen:    &seen{users: map[int64]*tg.User{}, pushes: map[string]int{}},
	}
}

// start connects the device, signs in with ua (nil: already signed in)
// and runs gotd's gap manager until stop.
func (d *device) start(t *testing.T, ua auth.UserAuthenticator) {
	t.Helper()
	disp := tg.NewUpdateDispatcher()
	s := d.seen
	disp.OnNewMessage(func(ctx context.Context, e tg.Entities, u *tg.UpdateNewMessage) error {
		defer s.lock()()
		s.addUsers(e)
		if m, ok := u.Message.(*tg.Message); ok {
			s.msgs = append(s.msgs, m)
		}
		return nil
	})
	disp.OnEditMessage(func(ctx context.Context, e tg.Entities, u *tg.UpdateEditMessage) error {
		defer s.lock()()
		if m, ok := u.Message.(*tg.Message); ok {
			s.edits = append(s.edits, m)
		}
		return nil
	})
	disp.OnDeleteMessages(func(ctx context.Context, e tg.Entities, u *tg.UpdateDeleteMessages) error {
		defer s.lock()()
		s.deletes = append(s.deletes, u.Messages)
		return nil
	})
	disp.OnReadHistoryOutbox(func(ctx context.Context, e tg.Entities, u *tg.UpdateReadHistoryOutbox) error {
		defer s.lock()()
		s.readOut = append(s.readOut, u)
		return nil
	})
	disp.OnReadHistoryInbox(func(ctx context.Context, e tg.Entities, u *tg.UpdateReadHistoryInbox) error {
		defer s.lock()()
		s.readIn = append(s.readIn, u)
		return nil
	})
	disp.OnDraftMessage(func(ctx context.Context, e tg.Entities, u *tg.UpdateDraftMessage) error {
		defer s.lock()()
		s.drafts = append(s.drafts, u)
		return nil
	})
	disp.OnUserTyping(func(ctx context.Context, e tg.Entities, u *tg.UpdateUserTyping) error {
		defer s.lock()()
		s.typing = append(s.typing, u)
		return nil
	})
	mgr := updates.New(updates.Config{Handler: disp, Storage: d.store, UserAccessHasher: d.store})
	raw := telegram.UpdateHandlerFunc(func(ctx context.Context, u tg.UpdatesClass) error {
		s.mu.Lock()
		s.pushes[u.TypeName()]++
		// gotd turns updateShortMessage into updateShort before handlers.
		if us, ok := u.(*tg.UpdateShort); ok {
			if nm, ok := us.Update.(*tg.UpdateNewMessage); ok {
				if m, ok := nm.Message.(*tg.Message); ok && m.Out {
					s.ownEcho++
				}
			}
		}
		s.mu.Unlock()
		return mgr.Handle(ctx, u)
	})
	c, err := mtclient.New(mtclient.Options{
		Addr:          d.n.ClientAddr().String(),
		PublicKeyFile: d.n.PublicKeyPath(),
		SessionFile:   d.session,
		Telegram: telegram.Options{
			Device:        telegram.DeviceConfig{DeviceModel: d.name},
			UpdateHandler: raw,
			Middlewares:   []telegram.Middleware{hook.UpdateHook(mgr.Handle), hook.AffectedHook(mgr)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.c, d.api = c, c.API()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	d.cancel, d.done = cancel, make(chan error, 1)
	go func() {
		d.done <- c.Run(ctx, func(ctx context.Context) error {
			if ua != nil {
				if err := auth.NewFlow(ua, auth.SendCodeOptions{}).Run(ctx, c.Auth()); err != nil {
					return fmt.Errorf("auth: %w", err)
				}
			}
			self, err := c.Self(ctx)
			if err != nil {
				return err
			}
			d.self = self
			return mgr.Run(ctx, c.API(), self.ID, updates.AuthOptions{OnStart: func(context.Context) { close(ready) }})
		})
	}()
	select {
	case <-ready:
	case err := <-d.done:
		cancel()
		t.Fatalf("%s: %v", d.name, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("%s did not start", d.name)
	}
	if !d.cleanup {
		// Registered on the first start's (outer) test: a restart inside
		// a subtest must outlive the subtest.
		t.Cleanup(d.stop)
		d.cleanup = true
	}
}

// stop disconnects the device; safe to call twice.
func (d *device) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	<-d.done
	d.cancel = nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantErr(t *testing.T, what string, err error, typ string) {
	t.Helper()
	if !tgerr.Is(err, typ) {
		t.Fatalf("%s: %v, want %s", what, err, typ)
	}
}

func inputPeer(u *tg.User) *tg.InputPeerUser {
	return &tg.InputPeerUser{UserID: u.ID, AccessHash: u.AccessHash}
}

func (d *device) pts(t *testing.T) int {
	t.Helper()
	st, err := d.api.UpdatesGetState(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.Pts
}

func texts(ms []*tg.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Message
	}
	return out
}

// TestPrivateChatEndToEnd drives private chats with gotd clients, each
// behind gotd's own updates gap manager: A on two devices, B on two, one
// of them offline for a while.
func TestPrivateChatEndToEnd(t *testing.T) {
	n, stop := startNode(t, t.TempDir())
	t.Cleanup(stop) // after the devices' cleanups: they stop first
	a1, a2 := newDevice(t, n, "a1"), newDevice(t, n, "a2")
	b1, b2 := newDevice(t, n, "b1"), newDevice(t, n, "b2")
	a1.start(t, auth.Test(mrand.New(mrand.NewSource(11)), 1))
	b1.start(t, auth.Test(mrand.New(mrand.NewSource(12)), 1))
	a2.start(t, auth.TestUser(a1.self.Phone, 1))
	b2.start(t, auth.TestUser(b1.self.Phone, 1))
	if a1.self.ID == b1.self.ID || a2.self.ID != a1.self.ID || b2.self.ID != b1.self.ID {
		t.Fatalf("users: a %d/%d, b %d/%d", a1.self.ID, a2.self.ID, b1.self.ID, b2.self.ID)
	}

	// A finds B by phone.
	imp, err := a1.api.ContactsImportContacts(ctxT(t), []tg.InputPhoneContact{{ClientID: 1, Phone: b1.self.Phone, FirstName: "B"}})
	if err != nil || len(imp.Users) != 1 {
		t.Fatalf("import: %v %+v", err, imp)
	}
	bUser := imp.Users[0].(*tg.User)
	toB := inputPeer(bUser)

	// B's second device goes offline; A sends 100 messages.
	b2.stop()
	const count = 100
	aIDs := make([]int, count) // A's ids of the messages, by index
	for i := 0; i < count; i++ {
		req := &tg.MessagesSendMessageRequest{Peer: toB, Message: fmt.Sprintf("msg %03d", i), RandomID: int64(1000 + i)}
		if i%10 == 0 {
			req.Entities = []tg.MessageEntityClass{&tg.MessageEntityBold{Offset: 0, Length: 3}}
		}
		res, err := a1.api.MessagesSendMessage(ctxT(t), req)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent, ok := res.(*tg.UpdateShortSentMessage)
		if !ok || !sent.Out || sent.PtsCount != 1 {
			t.Fatalf("send %d answered %T %+v", i, res, res)
		}
		aIDs[i] = sent.ID
	}
	// A retried send (same random_id) is the first send again.
	res, err := a1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: toB, Message: "msg 000", RandomID: 1000})
	if err != nil || res.(*tg.UpdateShortSentMessage).ID != aIDs[0] {
		t.Fatalf("resend: %v %+v", err, res)
	}

	wantTexts := make([]string, count)
	for i := range wantTexts {
		wantTexts[i] = fmt.Sprintf("msg %03d", i)
	}
	t.Run("live delivery in order once", func(t *testing.T) {
		waitFor(t, "b1 to get 100 messages", func() bool { defer b1.seen.lock()(); return len(b1.seen.msgs) >= count })
		waitFor(t, "a2 to see 100 sent messages", func() bool { defer a2.seen.lock()(); return len(a2.seen.msgs) >= count })
		time.Sleep(100 * time.Millisecond) // room for a duplicate to show
		defer b1.seen.lock()()
		defer a2.seen.lock()()
		if got := texts(b1.seen.msgs); !slices.Equal(got, wantTexts) {
			t.Fatalf("b1 got %d messages: %v", len(got), got)
		}
		for i, m := range b1.seen.msgs {
			if m.Out || m.ID != i+1 || m.PeerID.(*tg.PeerUser).UserID != a1.self.ID {
				t.Fatalf("b1 message %d: %+v", i, m)
			}
			if (i%10 == 0) != (len(m.Entities) == 1) {
				t.Fatalf("b1 message %d entities %v", i, m.Entities)
			}
		}
		if got := texts(a2.seen.msgs); !slices.Equal(got, wantTexts) {
			t.Fatalf("a2 got %v", got)
		}
		for i, m := range a2.seen.msgs {
			if !m.Out || m.ID != aIDs[i] {
				t.Fatalf("a2 message %d: %+v", i, m)
			}
		}
		if a1.seen.ownEcho != 0 || len(a1.seen.msgs) != 0 {
			t.Fatalf("the sending device was pushed its own messages: %d echoes, %d messages", a1.seen.ownEcho, len(a1.seen.msgs))
		}
	})

	// A edits message 50 while B2 is still away.
	_, err = a1.api.MessagesEditMessage(ctxT(t), &tg.MessagesEditMessageRequest{Peer: toB, ID: aIDs[50], Message: "msg 050 (edited)"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a1.api.MessagesEditMessage(ctxT(t), &tg.MessagesEditMessageRequest{Peer: toB, ID: aIDs[50], Message: "msg 050 (edited)"})
	wantErr(t, "same edit", err, "MESSAGE_NOT_MODIFIED")
	t.Run("edit seen on both sides", func(t *testing.T) {
		for _, d := range []*device{b1, a2} {
			waitFor(t, d.name+" to see the edit", func() bool { defer d.seen.lock()(); return len(d.seen.edits) == 1 })
			defer d.seen.lock()()
			if e := d.seen.edits[0]; e.Message != "msg 050 (edited)" || e.EditDate == 0 {
				t.Fatalf("%s edit %+v", d.name, e)
			}
		}
	})

	t.Run("offline device catches up by getDifference", func(t *testing.T) {
		b2.start(t, nil)
		// 101 log entries: a differenceSlice of 100, then a difference.
		waitFor(t, "b2 to catch up", func() bool { defer b2.seen.lock()(); return len(b2.seen.msgs) >= count })
		time.Sleep(100 * time.Millisecond)
		defer b2.seen.lock()()
		got := b2.seen.msgs
		if len(got) != count {
			t.Fatalf("b2 got %d messages", len(got))
		}
		for i, m := range got {
			want := wantTexts[i]
			if i == 50 {
				want = "msg 050 (edited)" // a difference shows messages as they are now
			}
			if m.ID != i+1 || m.Message != want {
				t.Fatalf("b2 message %d: id %d %q", i, m.ID, m.Message)
			}
		}
	})

	aPeer := func(t *testing.T, d *device) *tg.InputPeerUser {
		defer d.seen.lock()()
		u := d.seen.users[a1.self.ID]
		if u == nil {
			t.Fatalf("%s never got user A", d.name)
		}
		return inputPeer(u)
	}
	toA := aPeer(t, b1)

	t.Run("read receipts", func(t *testing.T) {
		aff, err := b1.api.MessagesReadHistory(ctxT(t), &tg.MessagesReadHistoryRequest{Peer: toA, MaxID: 10})
		if err != nil || aff.PtsCount != 1 {
			t.Fatalf("read: %v %+v", err, aff)
		}
		for _, d := range []*device{a1, a2} {
			waitFor(t, d.name+" read receipt", func() bool { defer d.seen.lock()(); return len(d.seen.readOut) == 1 })
			defer d.seen.lock()()
			if r := d.seen.readOut[0]; r.MaxID != aIDs[9] || r.Peer.(*tg.PeerUser).UserID != b1.self.ID {
				t.Fatalf("%s outbox %+v, want max_id %d", d.name, r, aIDs[9])
			}
		}
		waitFor(t, "b2 inbox read", func() bool { defer b2.seen.lock()(); return len(b2.seen.readIn) == 1 })
		if r := b2.seen.readIn[0]; r.MaxID != 10 || r.StillUnreadCount != count-10 {
			t.Fatalf("b2 inbox %+v", r)
		}
		pd, err := b1.api.MessagesGetPeerDialogs(ctxT(t), []tg.InputDialogPeerClass{&tg.InputDialogPeer{Peer: toA}})
		if err != nil {
			t.Fatal(err)
		}
		if dl := pd.Dialogs[0].(*tg.Dialog); dl.ReadInboxMaxID != 10 || dl.UnreadCount != count-10 || dl.TopMessage != count {
			t.Fatalf("b1's dialog %+v", dl)
		}
	})

	t.Run("delete without and with revoke", func(t *testing.T) {
		aff, err := a1.api.MessagesDeleteMessages(ctxT(t), &tg.MessagesDeleteMessagesRequest{ID: []int{aIDs[0]}})
		if err != nil || aff.PtsCount != 1 {
			t.Fatalf("delete: %v %+v", err, aff)
		}
		waitFor(t, "a2 delete", func() bool { defer a2.seen.lock()(); return len(a2.seen.deletes) == 1 })
		if d := a2.seen.deletes[0]; !slices.Equal(d, []int{aIDs[0]}) {
			t.Fatalf("a2 deleted %v", d)
		}
		got, err := b1.api.MessagesGetMessages(ctxT(t), []tg.InputMessageClass{&tg.InputMessageID{ID: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := got.(*tg.MessagesMessages).Messages[0].(*tg.Message); !ok || m.Message != "msg 000" {
			t.Fatalf("b's copy after a one-sided delete: %+v", got)
		}
		// B revokes message 2: gone for A too.
		if _, err := b1.api.MessagesDeleteMessages(ctxT(t), &tg.MessagesDeleteMessagesRequest{ID: []int{2}, Revoke: true}); err != nil {
			t.Fatal(err)
		}
		for _, d := range []*device{a1, a2} {
			waitFor(t, d.name+" revoke", func() bool {
				defer d.seen.lock()()
				return slices.ContainsFunc(d.seen.deletes, func(ids []int) bool { return slices.Equal(ids, []int{aIDs[1]}) })
			})
		}
		waitFor(t, "b2 revoke", func() bool { defer b2.seen.lock()(); return len(b2.seen.deletes) == 1 && b2.seen.deletes[0][0] == 2 })
		got, err = a1.api.MessagesGetMessages(ctxT(t), []tg.InputMessageClass{&tg.InputMessageID{ID: aIDs[1]}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got.(*tg.MessagesMessages).Messages[0].(*tg.MessageEmpty); !ok {
			t.Fatalf("a's copy after revoke: %+v", got)
		}
	})

	t.Run("forward", func(t *testing.T) {
		res, err := b1.api.MessagesForwardMessages(ctxT(t), &tg.MessagesForwardMessagesRequest{
			FromPeer: toA, ID: []int{3}, RandomID: []int64{77}, ToPeer: toA,
		})
		if err != nil {
			t.Fatal(err)
		}
		upd := res.(*tg.Updates)
		if len(upd.Updates) != 2 || upd.Updates[0].(*tg.UpdateMessageID).RandomID != 77 {
			t.Fatalf("forward answer %+v", upd.Updates)
		}
		waitFor(t, "a1 gets the forward", func() bool { defer a1.seen.lock()(); return len(a1.seen.msgs) == 1 })
		m := a1.seen.msgs[0]
		if m.Out || m.Message != "msg 002" || m.FwdFrom.FromID.(*tg.PeerUser).UserID != a1.self.ID {
			t.Fatalf("forward as A sees it: %+v", m)
		}
		// Into Saved Messages: B's other device sees it.
		if _, err := b1.api.MessagesForwardMessages(ctxT(t), &tg.MessagesForwardMessagesRequest{
			FromPeer: toA, ID: []int{4}, RandomID: []int64{78}, ToPeer: &tg.InputPeerSelf{},
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b2 sees the saved forward", func() bool {
			defer b2.seen.lock()()
			last := b2.seen.msgs[len(b2.seen.msgs)-1]
			return last.Message == "msg 003" && last.Out && last.PeerID.(*tg.PeerUser).UserID == b1.self.ID
		})
	})

	t.Run("search", func(t *testing.T) {
		res, err := a1.api.MessagesSearch(ctxT(t), &tg.MessagesSearchRequest{
			Peer: toB, Q: "MSG 04", Filter: &tg.InputMessagesFilterEmpty{}, Limit: 5,
		})
		if err != nil {
			t.Fatal(err)
		}
		sl, ok := res.(*tg.MessagesMessagesSlice)
		if !ok || sl.Count != 10 || len(sl.Messages) != 5 {
			t.Fatalf("search: %T %+v", res, res)
		}
		if m := sl.Messages[0].(*tg.Message); m.Message != "msg 049" {
			t.Fatalf("first hit %q", m.Message)
		}
	})

	t.Run("drafts", func(t *testing.T) {
		if _, err := a1.api.MessagesSaveDraft(ctxT(t), &tg.MessagesSaveDraftRequest{Peer: toB, Message: "unsent"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a2 draft", func() bool { defer a2.seen.lock()(); return len(a2.seen.drafts) == 1 })
		if d, ok := a2.seen.drafts[0].Draft.(*tg.DraftMessage); !ok || d.Message != "unsent" {
			t.Fatalf("a2 draft %+v", a2.seen.drafts[0])
		}
		pd, err := a2.api.MessagesGetPeerDialogs(ctxT(t), []tg.InputDialogPeerClass{&tg.InputDialogPeer{Peer: toB}})
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := pd.Dialogs[0].(*tg.Dialog).Draft.(*tg.DraftMessage); !ok || d.Message != "unsent" {
			t.Fatalf("dialog draft %+v", pd.Dialogs[0])
		}
		// B never sees A's draft.
		b1.seen.mu.Lock()
		nb := len(b1.seen.drafts)
		b1.seen.mu.Unlock()
		if nb != 0 {
			t.Fatal("a draft reached the other side")
		}
		// Sending with clear_draft clears it everywhere.
		if _, err := a1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: toB, Message: "sent", RandomID: 5000, ClearDraft: true}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a2 draft cleared", func() bool {
			defer a2.seen.lock()()
			_, ok := a2.seen.drafts[len(a2.seen.drafts)-1].Draft.(*tg.DraftMessageEmpty)
			return ok
		})
	})

	t.Run("typing is pushed, not stored", func(t *testing.T) {
		before := b1.pts(t)
		if _, err := a1.api.MessagesSetTyping(ctxT(t), &tg.MessagesSetTypingRequest{Peer: toB, Action: &tg.SendMessageTypingAction{}}); err != nil {
			t.Fatal(err)
		}
		for _, d := range []*device{b1, b2} {
			waitFor(t, d.name+" typing", func() bool {
				defer d.seen.lock()()
				return len(d.seen.typing) == 1 && d.seen.typing[0].UserID == a1.self.ID
			})
		}
		if b1.pts(t) != before {
			t.Fatal("typing moved pts")
		}
	})

	t.Run("saved messages and dialogs", func(t *testing.T) {
		if _, err := a1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: &tg.InputPeerSelf{}, Message: "note", RandomID: 6000}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a2 sees the note", func() bool {
			defer a2.seen.lock()()
			last := a2.seen.msgs[len(a2.seen.msgs)-1]
			return last.Message == "note" && last.PeerID.(*tg.PeerUser).UserID == a1.self.ID
		})
		// One at a time: a slice, then the next page by offset.
		page, err := a1.api.MessagesGetDialogs(ctxT(t), &tg.MessagesGetDialogsRequest{OffsetPeer: &tg.InputPeerEmpty{}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		sl := page.(*tg.MessagesDialogsSlice)
		if sl.Count != 2 || len(sl.Dialogs) != 1 || sl.Dialogs[0].(*tg.Dialog).Peer.(*tg.PeerUser).UserID != a1.self.ID {
			t.Fatalf("page 1 %+v", sl)
		}
		top := sl.Messages[0].(*tg.Message)
		page, err = a1.api.MessagesGetDialogs(ctxT(t), &tg.MessagesGetDialogsRequest{
			OffsetDate: top.Date, OffsetID: top.ID, OffsetPeer: &tg.InputPeerSelf{}, Limit: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		if sl := page.(*tg.MessagesDialogsSlice); len(sl.Dialogs) != 1 || sl.Dialogs[0].(*tg.Dialog).Peer.(*tg.PeerUser).UserID != b1.self.ID {
			t.Fatalf("page 2 %+v", sl)
		}
		// Pinned dialogs come first.
		if _, err := a1.api.MessagesToggleDialogPin(ctxT(t), &tg.MessagesToggleDialogPinRequest{Pinned: true, Peer: &tg.InputDialogPeer{Peer: toB}}); err != nil {
			t.Fatal(err)
		}
		dl, err := a1.api.MessagesGetDialogs(ctxT(t), &tg.MessagesGetDialogsRequest{OffsetPeer: &tg.InputPeerEmpty{}, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		all, ok := dl.(*tg.MessagesDialogs)
		if !ok || len(all.Dialogs) != 2 || len(all.Messages) != 2 {
			t.Fatalf("dialogs %T %+v", dl, dl)
		}
		first := all.Dialogs[0].(*tg.Dialog)
		if !first.Pinned || first.Peer.(*tg.PeerUser).UserID != b1.self.ID {
			t.Fatalf("pinned dialog not first: %+v", all.Dialogs)
		}
		if all.Dialogs[1].(*tg.Dialog).Peer.(*tg.PeerUser).UserID != a1.self.ID {
			t.Fatalf("saved messages missing: %+v", all.Dialogs)
		}
	})

	t.Run("history paging", func(t *testing.T) {
		h, err := b1.api.MessagesGetHistory(ctxT(t), &tg.MessagesGetHistoryRequest{Peer: toA, OffsetID: 50, AddOffset: -5, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		sl := h.(*tg.MessagesMessagesSlice)
		var got []int
		for _, m := range sl.Messages {
			got = append(got, m.GetID())
		}
		if !slices.Equal(got, []int{54, 53, 52, 51, 50, 49, 48, 47, 46, 45}) {
			t.Fatalf("around 50: %v", got)
		}
		// B's box: 100 received, 1 revoked, 1 forward to A, 1 more from A.
		if sl.Count != 101 {
			t.Fatalf("count %d", sl.Count)
		}
		if len(sl.Users) != 1 || sl.Users[0].(*tg.User).ID != a1.self.ID {
			t.Fatalf("users %+v", sl.Users)
		}
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		ctx := ctxT(t)
		// B writes notes to self until B's ids run past A's: then B's
		// newest id is one A's box does not have.
		var bTop int
		for i := 0; i < 5; i++ {
			res, err := b1.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: &tg.InputPeerSelf{}, Message: "note", RandomID: int64(8000 + i)})
			if err != nil {
				t.Fatal(err)
			}
			bTop = res.(*tg.UpdateShortSentMessage).ID
		}
		ptsA, ptsB := a1.pts(t), b1.pts(t)
		forged := &tg.InputPeerUser{UserID: b1.self.ID, AccessHash: bUser.AccessHash ^ 1}
		_, err := a1.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: forged, Message: "x", RandomID: 9001})
		wantErr(t, "forged hash", err, "PEER_ID_INVALID")
		_, err = a1.api.MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{Peer: forged, Limit: 10})
		wantErr(t, "forged hash history", err, "PEER_ID_INVALID")
		unknown := &tg.InputPeerUser{UserID: b1.self.ID + 1000, AccessHash: 12345}
		_, err = a1.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: unknown, Message: "x", RandomID: 9002})
		wantErr(t, "unknown peer", err, "PEER_ID_INVALID")
		_, err = a1.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: toB, Message: strings.Repeat("x", 4097), RandomID: 9003})
		wantErr(t, "4097 chars", err, "MESSAGE_TOO_LONG")
		_, err = a1.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: toB, Message: "", RandomID: 9004})
		wantErr(t, "empty", err, "MESSAGE_EMPTY")
		got, err := a1.api.MessagesGetMessages(ctx, []tg.InputMessageClass{&tg.InputMessageID{ID: bTop}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got.(*tg.MessagesMessages).Messages[0].(*tg.MessageEmpty); !ok {
			t.Fatalf("A reads B's id %d: %+v", bTop, got)
		}
		_, err = a1.api.MessagesEditMessage(ctx, &tg.MessagesEditMessageRequest{Peer: toB, ID: bTop, Message: "x"})
		wantErr(t, "edit another's id", err, "MESSAGE_ID_INVALID")
		_, err = b1.api.MessagesEditMessage(ctx, &tg.MessagesEditMessageRequest{Peer: toA, ID: 5, Message: "x"})
		wantErr(t, "edit A's message as B", err, "MESSAGE_AUTHOR_REQUIRED")
		aff, err := a1.api.MessagesDeleteMessages(ctx, &tg.MessagesDeleteMessagesRequest{ID: []int{bTop}, Revoke: true})
		if err != nil || aff.PtsCount != 0 {
			t.Fatalf("delete another's id: %v %+v", err, aff)
		}
		if a1.pts(t) != ptsA || b1.pts(t) != ptsB {
			t.Fatal("bad input moved pts")
		}
		h, err := b1.api.MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{Peer: toA, Limit: 1})
		if err != nil || h.(*tg.MessagesMessagesSlice).Count != 101 || h.(*tg.MessagesMessagesSlice).Messages[0].GetID() != 103 {
			t.Fatalf("b's history after bad input: %v %+v", err, h)
		}
	})

	t.Run("block", func(t *testing.T) {
		if _, err := b1.api.ContactsBlock(ctxT(t), &tg.ContactsBlockRequest{ID: toA}); err != nil {
			t.Fatal(err)
		}
		_, err := a1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: toB, Message: "hello?", RandomID: 9100})
		wantErr(t, "blocked", err, "USER_IS_BLOCKED")
		_, err = b1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: toA, Message: "hello?", RandomID: 9101})
		wantErr(t, "blocker writes", err, "YOU_BLOCKED_USER")
		if _, err := b1.api.ContactsUnblock(ctxT(t), &tg.ContactsUnblockRequest{ID: toA}); err != nil {
			t.Fatal(err)
		}
		if _, err := a1.api.MessagesSendMessage(ctxT(t), &tg.MessagesSendMessageRequest{Peer: toB, Message: "hello again", RandomID: 9102}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b1 after unblock", func() bool {
			defer b1.seen.lock()()
			return b1.seen.msgs[len(b1.seen.msgs)-1].Message == "hello again"
		})
	})
}
