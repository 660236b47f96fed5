package api

import (
	"strings"
	"testing"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"
)

func wantTG(t *testing.T, what string, err error, typ string) {
	t.Helper()
	if !tgerr.Is(err, typ) {
		t.Fatalf("%s: %v, want %s", what, err, typ)
	}
}

// TestMessagesInputBounds: every count and length a client controls is
// bounded, with Telegram's error names.
func TestMessagesInputBounds(t *testing.T) {
	f := newSvcFixture(t)
	const pa, pb, pc = 31, 32, 33
	a, b, c := f.signUp("9996610001", pa), f.signUp("9996610002", pb), f.signUp("9996610003", pc)
	ctx := as(pa)
	toB := f.peerOf(a, b)

	many := make([]tg.InputMessageClass, messagesGetMax+1)
	for i := range many {
		many[i] = &tg.InputMessageID{ID: i + 1}
	}
	_, err := f.s.messagesGetMessages(ctx, many)
	wantTG(t, "getMessages 101", err, "LIMIT_INVALID")
	_, err = f.s.messagesGetMessages(ctx, nil)
	wantTG(t, "getMessages none", err, "MESSAGE_IDS_EMPTY")
	_, err = f.s.messagesForwardMessages(ctx, &tg.MessagesForwardMessagesRequest{FromPeer: toB, ToPeer: toB, ID: make([]int, 101), RandomID: make([]int64, 101)})
	wantTG(t, "forward 101", err, "LIMIT_INVALID")
	_, err = f.s.messagesDeleteMessages(ctx, &tg.MessagesDeleteMessagesRequest{ID: make([]int, 101)})
	wantTG(t, "delete 101", err, "LIMIT_INVALID")
	_, err = f.s.messagesGetPeerDialogs(ctx, make([]tg.InputDialogPeerClass, peerDialogsMax+1))
	wantTG(t, "peer dialogs 101", err, "LIMIT_INVALID")
	_, err = f.s.messagesSaveDraft(ctx, &tg.MessagesSaveDraftRequest{Peer: toB, Message: strings.Repeat("x", 4097)})
	wantTG(t, "long draft", err, "MESSAGE_TOO_LONG")
	_, err = f.s.messagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: toB, Message: "hi", RandomID: 1,
		Entities: make([]tg.MessageEntityClass, 1025)})
	wantTG(t, "1025 entities", err, "ENTITY_BOUNDS_INVALID")
	_, err = f.s.messagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: toB, Message: "hi", RandomID: 1,
		Entities: []tg.MessageEntityClass{&tg.InputMessageEntityMentionName{Offset: 0, Length: 2, UserID: &tg.InputUser{UserID: c, AccessHash: 1}}}})
	wantTG(t, "mention with a forged hash", err, "ENTITY_MENTION_USER_INVALID")
	_, err = f.s.messagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: &tg.InputPeerChat{ChatID: 5}, Message: "hi", RandomID: 1})
	wantTG(t, "chat peer", err, "PEER_ID_INVALID")
	_, err = f.s.messagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: &tg.InputPeerEmpty{}, Message: "hi", RandomID: 1})
	wantTG(t, "empty peer", err, "PEER_ID_INVALID")
	if st, _ := f.s.updatesGetState(ctx); st.Pts != 0 {
		t.Fatalf("bad input moved pts to %d", st.Pts)
	}

	// A mention by InputUser is stored by id and makes the push a full
	// updates with the mentioned user.
	f.rec.take()
	_, err = f.s.messagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: toB, Message: "hi C", RandomID: 2,
		Entities: []tg.MessageEntityClass{&tg.InputMessageEntityMentionName{Offset: 3, Length: 1, UserID: &tg.InputUser{UserID: c, AccessHash: f.s.opts.Access.For(a, c)}}}})
	if err != nil {
		t.Fatal(err)
	}
	evs := f.rec.take()
	push, err := f.s.RenderEvent(evs[1])
	if err != nil {
		t.Fatal(err)
	}
	up, ok := push.(*tg.Updates)
	if !ok || len(up.Users) != 2 {
		t.Fatalf("mention pushed as %+v", push)
	}
	m := up.Updates[0].(*tg.UpdateNewMessage).Message.(*tg.Message)
	if mn, ok := m.Entities[0].(*tg.MessageEntityMentionName); !ok || mn.UserID != c {
		t.Fatalf("entities %+v", m.Entities)
	}
}

func TestPinnedAndPeerDialogs(t *testing.T) {
	f := newSvcFixture(t)
	const pa = 41
	a := f.signUp("9996610001", pa)
	ctx := as(pa)
	var peers []*tg.InputPeerUser
	for i := 0; i < 6; i++ {
		u := f.signUp("999661010"+string(rune('0'+i)), int64(50+i))
		p := f.peerOf(a, u)
		peers = append(peers, p)
		f.send(pa, p, "hi", int64(i+1))
	}
	// A peer never written to: an empty dialog, with A's state.
	stranger := f.signUp("9996610200", 60)
	pd, err := f.s.messagesGetPeerDialogs(ctx, []tg.InputDialogPeerClass{&tg.InputDialogPeer{Peer: f.peerOf(a, stranger)}})
	if err != nil {
		t.Fatal(err)
	}
	if d := pd.Dialogs[0].(*tg.Dialog); d.TopMessage != 0 || pd.State.Pts != 6 {
		t.Fatalf("stranger dialog %+v state %+v", d, pd.State)
	}
	for i := 0; i < 5; i++ {
		if _, err := f.s.messagesToggleDialogPin(ctx, &tg.MessagesToggleDialogPinRequest{Pinned: true, Peer: &tg.InputDialogPeer{Peer: peers[i]}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.s.messagesToggleDialogPin(ctx, &tg.MessagesToggleDialogPinRequest{Pinned: true, Peer: &tg.InputDialogPeer{Peer: peers[5]}})
	wantTG(t, "sixth pin", err, "PINNED_DIALOGS_TOO_MUCH")
	pinned, err := f.s.messagesGetPinnedDialogs(ctx, 0)
	if err != nil || len(pinned.Dialogs) != 5 {
		t.Fatalf("pinned: %v %+v", err, pinned)
	}
	// Newest pin first.
	if d := pinned.Dialogs[0].(*tg.Dialog); !d.Pinned || d.Peer.(*tg.PeerUser).UserID != peers[4].UserID {
		t.Fatalf("first pinned %+v", d)
	}
	arch, err := f.s.messagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{FolderID: 1, OffsetPeer: &tg.InputPeerEmpty{}})
	if err != nil || len(arch.(*tg.MessagesDialogs).Dialogs) != 0 {
		t.Fatalf("archive: %v %+v", err, arch)
	}
	// Limit 1 still lists the pins first, plus one more.
	dl, err := f.s.messagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{OffsetPeer: &tg.InputPeerEmpty{}, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sl, ok := dl.(*tg.MessagesDialogs); !ok || len(sl.Dialogs) != 6 {
		t.Fatalf("first page %T %+v", dl, dl)
	}
}
