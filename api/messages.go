package api

import (
	"context"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// Limits on what one messages.* call may ask for. Every count a client
// controls is bounded by one of these or by messaging's own limits.
const (
	// messagesGetMax bounds messages.getMessages.
	messagesGetMax = 100
	// peerDialogsMax bounds messages.getPeerDialogs.
	peerDialogsMax = 100
)

var (
	errMessageIDsEmpty      = tgerr.New(400, "MESSAGE_IDS_EMPTY")
	errEntityMentionInvalid = tgerr.New(400, "ENTITY_MENTION_USER_INVALID")
	errEntityBoundsInvalid  = tgerr.New(400, "ENTITY_BOUNDS_INVALID")
)

func (s *Service) registerMessages() {
	s.d.OnMessagesSendMessage(s.messagesSendMessage)
	s.d.OnMessagesForwardMessages(s.messagesForwardMessages)
	s.d.OnMessagesEditMessage(s.messagesEditMessage)
	s.d.OnMessagesDeleteMessages(s.messagesDeleteMessages)
	s.d.OnMessagesReadHistory(s.messagesReadHistory)
	s.d.OnMessagesGetHistory(s.messagesGetHistory)
	s.d.OnMessagesSearch(s.messagesSearch)
	s.d.OnMessagesGetMessages(s.messagesGetMessages)
	s.d.OnMessagesGetDialogs(s.messagesGetDialogs)
	s.d.OnMessagesGetPeerDialogs(s.messagesGetPeerDialogs)
	s.d.OnMessagesGetPinnedDialogs(s.messagesGetPinnedDialogs)
	s.d.OnMessagesToggleDialogPin(s.messagesToggleDialogPin)
	s.d.OnMessagesSetTyping(s.messagesSetTyping)
	s.d.OnMessagesSaveDraft(s.messagesSaveDraft)
}

// caller returns the signed-in user and the permanent key (the device)
// the call came from.
func (s *Service) caller(ctx context.Context) (uid, auth int64, err error) {
	uid, err = s.self(ctx)
	if err != nil {
		return 0, 0, err
	}
	return uid, callFrom(ctx).PermKeyID, nil
}

// peer resolves an InputPeer to a dialog peer, checking the access hash.
func (s *Service) peer(tx storage.Reader, viewer int64, in tg.InputPeerClass) (messaging.Peer, error) {
	id, err := s.resolvePeer(tx, viewer, in)
	if err != nil {
		return messaging.Peer{}, err
	}
	return messaging.UserPeer(id), nil
}

// dialogPeer resolves an InputDialogPeer; folders are not dialogs here.
func (s *Service) dialogPeer(tx storage.Reader, viewer int64, in tg.InputDialogPeerClass) (messaging.Peer, error) {
	p, ok := in.(*tg.InputDialogPeer)
	if !ok {
		return messaging.Peer{}, errPeerInvalid
	}
	return s.peer(tx, viewer, p.Peer)
}

// entities checks formatting entities and encodes them for storage. A
// mention by InputUser becomes a mention by user id, once its access hash
// is checked.
func (s *Service) entities(tx storage.Reader, viewer int64, in []tg.MessageEntityClass) ([]byte, error) {
	if len(in) > messaging.EntitiesMax {
		return nil, errEntityBoundsInvalid
	}
	out := make([]tg.MessageEntityClass, 0, len(in))
	for _, e := range in {
		if m, ok := e.(*tg.InputMessageEntityMentionName); ok {
			id, err := s.resolveUser(tx, viewer, m.UserID)
			if err != nil {
				if _, rpc := tgerr.As(err); rpc {
					return nil, errEntityMentionInvalid
				}
				return nil, err
			}
			e = &tg.MessageEntityMentionName{Offset: m.Offset, Length: m.Length, UserID: id}
		}
		out = append(out, e)
	}
	return messaging.EncodeEntities(out)
}

func replyToID(r tg.InputReplyToClass) int {
	if m, ok := r.(*tg.InputReplyToMessage); ok {
		return m.ReplyToMsgID
	}
	return 0
}

// renderTL turns messages into TL and lists the users they refer to.
func renderTL(msgs []*messaging.Message) ([]tg.MessageClass, []int64, error) {
	out := make([]tg.MessageClass, 0, len(msgs))
	var ids []int64
	for _, m := range msgs {
		tm, err := m.TL()
		if err != nil {
			return nil, nil, err
		}
		out = append(out, tm)
		ids = append(ids, m.UserIDs()...)
	}
	return out, ids, nil
}

// render turns messages into TL with the users they refer to.
func (s *Service) render(tx storage.Reader, viewer int64, msgs []*messaging.Message) ([]tg.MessageClass, []tg.UserClass, error) {
	out, ids, err := renderTL(msgs)
	if err != nil {
		return nil, nil, err
	}
	users, err := s.usersFor(tx, viewer, ids)
	return out, users, err
}

// peerAndEntities resolves the peer a message goes to and checks its
// entities, as the caller sees them.
func (s *Service) peerAndEntities(ctx context.Context, method string, uid int64, in tg.InputPeerClass, ents []tg.MessageEntityClass) (peer messaging.Peer, enc []byte, err error) {
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		if peer, err = s.peer(tx, uid, in); err != nil {
			return err
		}
		enc, err = s.entities(tx, uid, ents)
		return err
	})
	return peer, enc, err
}

// messageUpdates answers with an updates object carrying msgs as the
// viewer sees them; wrap turns the rendered messages into the updates.
func (s *Service) messageUpdates(ctx context.Context, method string, viewer int64, msgs []*messaging.Message, wrap func([]tg.MessageClass) []tg.UpdateClass) (*tg.Updates, error) {
	out := &tg.Updates{Date: int(s.opts.Now().Unix())}
	err := s.viewState(ctx, method, func(tx storage.Reader) error {
		rendered, users, err := s.render(tx, viewer, msgs)
		if err != nil {
			return err
		}
		out.Updates, out.Users = wrap(rendered), users
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Service) messagesSendMessage(ctx context.Context, req *tg.MessagesSendMessageRequest) (tg.UpdatesClass, error) {
	const method = "messages.sendMessage"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	cmd := messaging.SendMessage{
		From: uid, Auth: auth, RandomID: req.RandomID, Text: req.Message,
		ReplyTo: replyToID(req.ReplyTo), Silent: req.Silent, ClearDraft: req.ClearDraft,
	}
	cmd.To, cmd.Entities, err = s.peerAndEntities(ctx, method, uid, req.Peer, req.Entities)
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, method, cmd)
	if err != nil {
		return nil, err
	}
	m := res.(messaging.Sent).Msg
	ents, err := messaging.DecodeEntities(m.Entities)
	if err != nil {
		return nil, s.internal(method, err)
	}
	// The short form: the client has the rest (text, peer) already.
	return &tg.UpdateShortSentMessage{Out: true, ID: m.ID, Pts: m.Pts, PtsCount: 1, Date: int(m.Date), Entities: ents}, nil
}

func (s *Service) messagesForwardMessages(ctx context.Context, req *tg.MessagesForwardMessagesRequest) (tg.UpdatesClass, error) {
	const method = "messages.forwardMessages"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.ID) > messaging.ForwardMax || len(req.RandomID) > messaging.ForwardMax {
		return nil, errLimitInvalid
	}
	cmd := messaging.ForwardMessages{
		From: uid, Auth: auth, IDs: req.ID, RandomIDs: req.RandomID,
		DropAuthor: req.DropAuthor, Silent: req.Silent,
	}
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		if cmd.FromPeer, err = s.peer(tx, uid, req.FromPeer); err != nil {
			return err
		}
		cmd.To, err = s.peer(tx, uid, req.ToPeer)
		return err
	})
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, method, cmd)
	if err != nil {
		return nil, err
	}
	fw := res.(messaging.Forwarded)
	return s.messageUpdates(ctx, method, uid, fw.Msgs, func(msgs []tg.MessageClass) []tg.UpdateClass {
		out := make([]tg.UpdateClass, 0, 2*len(msgs))
		for i, m := range fw.Msgs {
			out = append(out, &tg.UpdateMessageID{ID: m.ID, RandomID: fw.RandomIDs[i]})
		}
		for i, m := range fw.Msgs {
			out = append(out, &tg.UpdateNewMessage{Message: msgs[i], Pts: m.Pts, PtsCount: 1})
		}
		return out
	})
}

func (s *Service) messagesEditMessage(ctx context.Context, req *tg.MessagesEditMessageRequest) (tg.UpdatesClass, error) {
	const method = "messages.editMessage"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.Media != nil || req.ReplyMarkup != nil {
		return nil, tgerr.New(400, "MEDIA_INVALID")
	}
	cmd := messaging.EditMessage{User: uid, Auth: auth, ID: req.ID, Text: req.Message}
	cmd.Peer, cmd.Entities, err = s.peerAndEntities(ctx, method, uid, req.Peer, req.Entities)
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, method, cmd)
	if err != nil {
		return nil, err
	}
	ed := res.(messaging.Edited)
	return s.messageUpdates(ctx, method, uid, []*messaging.Message{ed.Msg}, func(msgs []tg.MessageClass) []tg.UpdateClass {
		return []tg.UpdateClass{&tg.UpdateEditMessage{Message: msgs[0], Pts: ed.Pts, PtsCount: 1}}
	})
}

func (s *Service) messagesDeleteMessages(ctx context.Context, req *tg.MessagesDeleteMessagesRequest) (*tg.MessagesAffectedMessages, error) {
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.ID) > messaging.DeleteMax {
		return nil, errLimitInvalid
	}
	res, err := s.applyCommand(ctx, "messages.deleteMessages", messaging.DeleteMessages{User: uid, Auth: auth, IDs: req.ID, Revoke: req.Revoke})
	if err != nil {
		return nil, err
	}
	a := res.(messaging.Affected)
	return &tg.MessagesAffectedMessages{Pts: a.Pts, PtsCount: a.PtsCount}, nil
}

func (s *Service) messagesReadHistory(ctx context.Context, req *tg.MessagesReadHistoryRequest) (*tg.MessagesAffectedMessages, error) {
	const method = "messages.readHistory"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	cmd := messaging.ReadHistory{User: uid, Auth: auth, MaxID: req.MaxID}
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		cmd.Peer, err = s.peer(tx, uid, req.Peer)
		return err
	})
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, method, cmd)
	if err != nil {
		return nil, err
	}
	a := res.(messaging.Affected)
	return &tg.MessagesAffectedMessages{Pts: a.Pts, PtsCount: a.PtsCount}, nil
}

// messagesPage answers a history or search page: messages.messages when
// it holds the whole list, messages.messagesSlice otherwise.
func (s *Service) messagesPage(tx storage.Reader, viewer int64, pg messaging.Page) (tg.MessagesMessagesClass, error) {
	msgs, users, err := s.render(tx, viewer, pg.Msgs)
	if err != nil {
		return nil, err
	}
	if len(msgs) == pg.Count && !pg.Inexact {
		return &tg.MessagesMessages{Messages: msgs, Users: users, Chats: []tg.ChatClass{}}, nil
	}
	return &tg.MessagesMessagesSlice{Inexact: pg.Inexact, Count: pg.Count, Messages: msgs, Users: users, Chats: []tg.ChatClass{}}, nil
}

func (s *Service) messagesGetHistory(ctx context.Context, req *tg.MessagesGetHistoryRequest) (tg.MessagesMessagesClass, error) {
	const method = "messages.getHistory"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	var out tg.MessagesMessagesClass
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		p, err := s.peer(tx, uid, req.Peer)
		if err != nil {
			return err
		}
		pg, err := messaging.History(tx, uid, p, messaging.HistoryQuery{
			OffsetID: req.OffsetID, OffsetDate: int64(req.OffsetDate), AddOffset: req.AddOffset,
			Limit: req.Limit, MaxID: req.MaxID, MinID: req.MinID,
		})
		if err != nil {
			return err
		}
		out, err = s.messagesPage(tx, uid, pg)
		return err
	})
	return out, err
}

func (s *Service) messagesSearch(ctx context.Context, req *tg.MessagesSearchRequest) (tg.MessagesMessagesClass, error) {
	const method = "messages.search"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	empty := &tg.MessagesMessages{Messages: []tg.MessageClass{}, Users: []tg.UserClass{}, Chats: []tg.ChatClass{}}
	if messaging.UTF16Len(req.Q) > messaging.MessageLengthMax {
		return empty, nil // longer than any message: nothing can match
	}
	var out tg.MessagesMessagesClass
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		p, err := s.peer(tx, uid, req.Peer)
		if err != nil {
			return err
		}
		var from int64
		if req.FromID != nil {
			if from, err = s.resolvePeer(tx, uid, req.FromID); err != nil {
				return err
			}
		}
		if _, ok := req.Filter.(*tg.InputMessagesFilterEmpty); !ok && req.Filter != nil {
			// Media, links, pins and the rest: no message here has any.
			out = empty
			return nil
		}
		pg, err := messaging.Search(tx, uid, p, req.Q, from, messaging.HistoryQuery{
			OffsetID: req.OffsetID, AddOffset: req.AddOffset, Limit: req.Limit,
			MaxID: req.MaxID, MinID: req.MinID, MinDate: int64(req.MinDate), MaxDate: int64(req.MaxDate),
		})
		if err != nil {
			return err
		}
		out, err = s.messagesPage(tx, uid, pg)
		return err
	})
	return out, err
}

func (s *Service) messagesGetMessages(ctx context.Context, in []tg.InputMessageClass) (tg.MessagesMessagesClass, error) {
	const method = "messages.getMessages"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, errMessageIDsEmpty
	}
	if len(in) > messagesGetMax {
		return nil, errLimitInvalid
	}
	ids := make([]int, len(in))
	for i, im := range in {
		if m, ok := im.(*tg.InputMessageID); ok {
			ids[i] = m.ID
		}
	}
	var out tg.MessagesMessagesClass
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		msgs, err := messaging.GetMessages(tx, uid, ids)
		if err != nil {
			return err
		}
		var found []*messaging.Message
		for _, m := range msgs {
			if m != nil {
				found = append(found, m)
			}
		}
		rendered, users, err := s.render(tx, uid, found)
		if err != nil {
			return err
		}
		res := &tg.MessagesMessages{Users: users, Chats: []tg.ChatClass{}}
		j := 0
		for i, m := range msgs {
			if m == nil {
				// Unknown, deleted or someone else's: Telegram's answer
				// keeps the slot.
				res.Messages = append(res.Messages, &tg.MessageEmpty{ID: ids[i]})
				continue
			}
			res.Messages = append(res.Messages, rendered[j])
			j++
		}
		out = res
		return nil
	})
	return out, err
}

// dialogs renders dialogs with their top messages and users.
func (s *Service) dialogs(tx storage.Reader, uid int64, ds []*messaging.Dialog) (dialogs []tg.DialogClass, msgs []tg.MessageClass, users []tg.UserClass, err error) {
	pins, err := messaging.PinnedDialogs(tx, uid)
	if err != nil {
		return nil, nil, nil, err
	}
	pinned := make(map[messaging.Peer]bool, len(pins))
	for _, d := range pins {
		pinned[d.Peer] = true
	}
	var tops []*messaging.Message
	ids := []int64{}
	for _, d := range ds {
		td := &tg.Dialog{
			Pinned:          pinned[d.Peer],
			Peer:            d.Peer.TL(),
			TopMessage:      d.TopMessage,
			ReadInboxMaxID:  d.ReadInboxMaxID,
			ReadOutboxMaxID: d.ReadOutboxMaxID,
			UnreadCount:     d.UnreadCount,
			NotifySettings:  tg.PeerNotifySettings{},
		}
		if d.Draft != nil {
			if td.Draft, err = d.Draft.TL(); err != nil {
				return nil, nil, nil, err
			}
		}
		dialogs = append(dialogs, td)
		ids = append(ids, d.Peer.ID)
		if d.TopMessage != 0 {
			m, ok, err := messaging.GetMessage(tx, uid, d.TopMessage)
			if err != nil {
				return nil, nil, nil, err
			}
			if ok {
				tops = append(tops, m)
			}
		}
	}
	msgs, mids, err := renderTL(tops)
	if err != nil {
		return nil, nil, nil, err
	}
	users, err = s.usersFor(tx, uid, append(ids, mids...))
	return dialogs, msgs, users, err
}

func (s *Service) messagesGetDialogs(ctx context.Context, req *tg.MessagesGetDialogsRequest) (tg.MessagesDialogsClass, error) {
	const method = "messages.getDialogs"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if req.FolderID != 0 {
		// Nothing is archived: the archive folder is empty.
		return &tg.MessagesDialogs{Dialogs: []tg.DialogClass{}, Messages: []tg.MessageClass{}, Chats: []tg.ChatClass{}, Users: []tg.UserClass{}}, nil
	}
	q := messaging.DialogsQuery{
		OffsetDate: int64(req.OffsetDate), OffsetID: req.OffsetID,
		Limit: req.Limit, ExcludePinned: req.ExcludePinned,
	}
	// The offset peer only breaks ties in the order; it grants nothing,
	// so its access hash is not needed.
	switch p := req.OffsetPeer.(type) {
	case *tg.InputPeerUser:
		op := messaging.UserPeer(p.UserID)
		q.OffsetPeer = &op
	case *tg.InputPeerSelf:
		op := messaging.UserPeer(uid)
		q.OffsetPeer = &op
	}
	var out tg.MessagesDialogsClass
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		list, total, err := messaging.ListDialogs(tx, uid, q)
		if err != nil {
			return err
		}
		dialogs, msgs, users, err := s.dialogs(tx, uid, list)
		if err != nil {
			return err
		}
		first := q.OffsetDate == 0 && q.OffsetID == 0 && q.OffsetPeer == nil
		if first && len(dialogs) >= total {
			out = &tg.MessagesDialogs{Dialogs: dialogs, Messages: msgs, Chats: []tg.ChatClass{}, Users: users}
			return nil
		}
		out = &tg.MessagesDialogsSlice{Count: total, Dialogs: dialogs, Messages: msgs, Chats: []tg.ChatClass{}, Users: users}
		return nil
	})
	return out, err
}

// peerDialogs answers getPeerDialogs and getPinnedDialogs, which carry the
// caller's update state.
func (s *Service) peerDialogs(tx storage.Reader, uid int64, list []*messaging.Dialog) (*tg.MessagesPeerDialogs, error) {
	dialogs, msgs, users, err := s.dialogs(tx, uid, list)
	if err != nil {
		return nil, err
	}
	st, err := s.updatesState(tx, uid)
	if err != nil {
		return nil, err
	}
	return &tg.MessagesPeerDialogs{Dialogs: dialogs, Messages: msgs, Chats: []tg.ChatClass{}, Users: users, State: st}, nil
}

func (s *Service) messagesGetPeerDialogs(ctx context.Context, peers []tg.InputDialogPeerClass) (*tg.MessagesPeerDialogs, error) {
	const method = "messages.getPeerDialogs"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if len(peers) > peerDialogsMax {
		return nil, errLimitInvalid
	}
	var out *tg.MessagesPeerDialogs
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		var list []*messaging.Dialog
		for _, in := range peers {
			p, err := s.dialogPeer(tx, uid, in)
			if err != nil {
				return err
			}
			d, ok, err := messaging.GetDialog(tx, uid, p)
			if err != nil {
				return err
			}
			if !ok {
				// No messages yet: an empty dialog, as Telegram shows
				// a chat never written in.
				d = &messaging.Dialog{Peer: p}
			}
			list = append(list, d)
		}
		out, err = s.peerDialogs(tx, uid, list)
		return err
	})
	return out, err
}

func (s *Service) messagesGetPinnedDialogs(ctx context.Context, folderID int) (*tg.MessagesPeerDialogs, error) {
	const method = "messages.getPinnedDialogs"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	var out *tg.MessagesPeerDialogs
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		var list []*messaging.Dialog
		if folderID == 0 {
			if list, err = messaging.PinnedDialogs(tx, uid); err != nil {
				return err
			}
		}
		out, err = s.peerDialogs(tx, uid, list)
		return err
	})
	return out, err
}

func (s *Service) messagesToggleDialogPin(ctx context.Context, req *tg.MessagesToggleDialogPinRequest) (bool, error) {
	const method = "messages.toggleDialogPin"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return false, err
	}
	cmd := messaging.ToggleDialogPin{User: uid, Auth: auth, Pinned: req.Pinned}
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		cmd.Peer, err = s.dialogPeer(tx, uid, req.Peer)
		return err
	})
	if err != nil {
		return false, err
	}
	if _, err := s.applyCommand(ctx, method, cmd); err != nil {
		return false, err
	}
	return true, nil
}

// messagesSetTyping pushes updateUserTyping to the peer's devices. It is
// ephemeral: nothing is stored and nothing enters the pts log.
func (s *Service) messagesSetTyping(ctx context.Context, req *tg.MessagesSetTypingRequest) (bool, error) {
	const method = "messages.setTyping"
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	if req.Action == nil {
		return false, tgerr.New(400, "TYPE_CONSTRUCTOR_INVALID")
	}
	var to int64
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		p, err := s.peer(tx, uid, req.Peer)
		if err != nil {
			return err
		}
		if p.ID == uid {
			return nil
		}
		// Someone who blocked the caller does not see them type (the
		// caller's group knows of the block: no read of theirs).
		blocked, err := messaging.IsBlockedBy(tx, uid, p.ID)
		if err != nil || blocked {
			return err
		}
		to = p.ID
		return nil
	})
	if err != nil || to == 0 {
		return err == nil, err
	}
	b, err := encodeUpdate(&tg.UpdateUserTyping{UserID: uid, Action: req.Action})
	if err != nil {
		return false, s.internal(method, err)
	}
	s.m.Publish([]messaging.Event{{UserID: to, Update: b}})
	return true, nil
}

func (s *Service) messagesSaveDraft(ctx context.Context, req *tg.MessagesSaveDraftRequest) (bool, error) {
	const method = "messages.saveDraft"
	uid, auth, err := s.caller(ctx)
	if err != nil {
		return false, err
	}
	if req.Media != nil {
		return false, tgerr.New(400, "MEDIA_INVALID")
	}
	cmd := messaging.SaveDraft{User: uid, Auth: auth, Text: req.Message, ReplyTo: replyToID(req.ReplyTo), NoWebpage: req.NoWebpage}
	cmd.Peer, cmd.Entities, err = s.peerAndEntities(ctx, method, uid, req.Peer, req.Entities)
	if err != nil {
		return false, err
	}
	if _, err := s.applyCommand(ctx, method, cmd); err != nil {
		return false, err
	}
	return true, nil
}
