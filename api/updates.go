package api

import (
	"context"
	"fmt"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// Update log limits.
const (
	// differenceMax is how many log entries one getDifference returns;
	// more make a differenceSlice.
	differenceMax = 100
	// differenceTooLongPts is how far behind a client may be before
	// getDifference gives up and answers differenceTooLong: replaying more
	// would cost more than the client refetching its dialogs. The log
	// keeps no more than that.
	differenceTooLongPts = messaging.UpdateLogKeep
)

func (s *Service) registerUpdates() {
	s.d.OnUpdatesGetState(s.updatesGetState)
	s.d.OnUpdatesGetDifference(s.updatesGetDifference)
}

func encodeUpdate(u tg.UpdateClass) ([]byte, error) {
	var b bin.Buffer
	if err := u.Encode(&b); err != nil {
		return nil, err
	}
	return b.Buf, nil
}

// updatesState is the user's position: pts from the log, date now. qts
// and seq are unused (no secret chats; updates are not sequenced by seq).
func (s *Service) updatesState(tx storage.Reader, uid int64) (tg.UpdatesState, error) {
	st, err := messaging.GetState(tx, uid)
	if err != nil {
		return tg.UpdatesState{}, err
	}
	return tg.UpdatesState{Pts: st.Pts, Date: int(s.opts.Now().Unix())}, nil
}

func (s *Service) updatesGetState(ctx context.Context) (*tg.UpdatesState, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	var st tg.UpdatesState
	err = s.viewState(ctx, "updates.getState", func(tx storage.Reader) error {
		st, err = s.updatesState(tx, uid)
		return err
	})
	return &st, err
}

// updatesGetDifference replays the user's update log after req.Pts.
// updateNewMessage entries become new_messages, rendered as the messages
// are now (edited text; a message deleted since is left out, its
// updateDeleteMessages follows in other_updates); every other entry goes
// to other_updates with its pts.
func (s *Service) updatesGetDifference(ctx context.Context, req *tg.UpdatesGetDifferenceRequest) (tg.UpdatesDifferenceClass, error) {
	const method = "updates.getDifference"
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	limit := differenceMax
	if req.PtsLimit > 0 {
		limit = min(limit, req.PtsLimit)
	}
	tooLong := differenceTooLongPts
	if req.PtsTotalLimit > 0 {
		tooLong = min(tooLong, req.PtsTotalLimit)
	}
	now := int(s.opts.Now().Unix())
	var out tg.UpdatesDifferenceClass
	err = s.viewState(ctx, method, func(tx storage.Reader) error {
		st, err := messaging.GetState(tx, uid)
		if err != nil {
			return err
		}
		switch {
		case req.Pts == st.Pts:
			out = &tg.UpdatesDifferenceEmpty{Date: now}
			return nil
		case req.Pts > st.Pts || st.Pts-req.Pts > tooLong || req.Pts < 0:
			// Ahead of the log (never acknowledged by us) or too far
			// behind: the client must take our pts and refetch.
			out = &tg.UpdatesDifferenceTooLong{Pts: st.Pts}
			return nil
		}
		recs, err := messaging.UpdatesSince(tx, uid, req.Pts, limit+1)
		if err != nil {
			return err
		}
		slice := len(recs) > limit
		if slice {
			recs = recs[:limit]
		}
		var msgs []*messaging.Message
		var others []tg.UpdateClass
		var ids []int64
		for _, r := range recs {
			u, err := tg.DecodeUpdate(&bin.Buffer{Buf: r.Update})
			if err != nil {
				return fmt.Errorf("decode log entry %d: %w", r.Pts, err)
			}
			if nm, ok := u.(*tg.UpdateNewMessage); ok {
				m, found, err := messaging.GetMessage(tx, uid, nm.Message.GetID())
				if err != nil {
					return err
				}
				if found {
					msgs = append(msgs, m)
				}
				continue
			}
			others = append(others, u)
			ids = append(ids, updateUserIDs(u)...)
		}
		newMsgs, mids, err := renderTL(msgs)
		if err != nil {
			return err
		}
		users, err := s.usersFor(tx, uid, append(mids, ids...))
		if err != nil {
			return err
		}
		if others == nil {
			others = []tg.UpdateClass{}
		}
		if slice {
			last := recs[len(recs)-1]
			out = &tg.UpdatesDifferenceSlice{
				NewMessages: newMsgs, NewEncryptedMessages: []tg.EncryptedMessageClass{},
				OtherUpdates: others, Chats: []tg.ChatClass{}, Users: users,
				IntermediateState: tg.UpdatesState{Pts: last.Pts, Date: int(last.Date)},
			}
			return nil
		}
		out = &tg.UpdatesDifference{
			NewMessages: newMsgs, NewEncryptedMessages: []tg.EncryptedMessageClass{},
			OtherUpdates: others, Chats: []tg.ChatClass{}, Users: users,
			State: tg.UpdatesState{Pts: st.Pts, Date: now},
		}
		return nil
	})
	return out, err
}

// updateUserIDs lists the users an update refers to.
func updateUserIDs(u tg.UpdateClass) []int64 {
	var ids []int64
	peer := func(p tg.PeerClass) {
		if pu, ok := p.(*tg.PeerUser); ok {
			ids = append(ids, pu.UserID)
		}
	}
	switch u := u.(type) {
	case *tg.UpdateNewMessage:
		ids = append(ids, messageUserIDs(u.Message)...)
	case *tg.UpdateEditMessage:
		ids = append(ids, messageUserIDs(u.Message)...)
	case *tg.UpdateReadHistoryInbox:
		peer(u.Peer)
	case *tg.UpdateReadHistoryOutbox:
		peer(u.Peer)
	case *tg.UpdateDraftMessage:
		peer(u.Peer)
	case *tg.UpdateUserTyping:
		ids = append(ids, u.UserID)
	case *tg.UpdatePeerBlocked:
		peer(u.PeerID)
	case *tg.UpdateUserName:
		ids = append(ids, u.UserID)
	case *tg.UpdateDialogPinned:
		if dp, ok := u.Peer.(*tg.DialogPeer); ok {
			peer(dp.Peer)
		}
	}
	return ids
}

func messageUserIDs(mc tg.MessageClass) []int64 {
	m, ok := mc.(*tg.Message)
	if !ok {
		return nil
	}
	var ids []int64
	for _, p := range []tg.PeerClass{m.FromID, m.PeerID, m.FwdFrom.FromID, m.FwdFrom.SavedFromPeer} {
		if pu, ok := p.(*tg.PeerUser); ok {
			ids = append(ids, pu.UserID)
		}
	}
	for _, e := range m.Entities {
		if mn, ok := e.(*tg.MessageEntityMentionName); ok {
			ids = append(ids, mn.UserID)
		}
	}
	return ids
}

// RenderEvent turns a committed event into what the user's sessions are
// pushed, in the form Telegram uses: updateShortMessage for a plain
// private message (the client knows, or fetches by getDifference, the
// one user it names), updateShort for updates outside the pts log
// (typing, drafts, pins), and updates with the users it refers to for the
// rest.
func (s *Service) RenderEvent(ev messaging.Event) (bin.Encoder, error) {
	u, err := tg.DecodeUpdate(&bin.Buffer{Buf: ev.Update})
	if err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	now := int(s.opts.Now().Unix())
	if short, ok := shortMessage(u); ok {
		return short, nil
	}
	if ev.Pts == 0 {
		return &tg.UpdateShort{Update: u, Date: now}, nil
	}
	out := &tg.Updates{Updates: []tg.UpdateClass{u}, Chats: []tg.ChatClass{}, Date: now}
	err = s.m.View(context.Background(), func(tx storage.Reader) error {
		out.Users, err = s.usersFor(tx, ev.UserID, updateUserIDs(u))
		return err
	})
	return out, err
}

// RenderEvents renders several events of one user, each with a pts, as
// one updates container: a burst (a batch carried from another group or
// DC) then costs the user's sessions one push instead of one each, and
// their outgoing queues do not overflow. One event renders as RenderEvent
// does.
func (s *Service) RenderEvents(evs []messaging.Event) (bin.Encoder, error) {
	if len(evs) == 1 {
		return s.RenderEvent(evs[0])
	}
	out := &tg.Updates{Chats: []tg.ChatClass{}, Date: int(s.opts.Now().Unix())}
	var ids []int64
	for _, ev := range evs {
		if ev.UserID != evs[0].UserID || ev.Pts == 0 {
			return nil, fmt.Errorf("render events: mixed users or an event without pts")
		}
		u, err := tg.DecodeUpdate(&bin.Buffer{Buf: ev.Update})
		if err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		out.Updates = append(out.Updates, u)
		ids = append(ids, updateUserIDs(u)...)
	}
	err := s.m.View(context.Background(), func(tx storage.Reader) (err error) {
		out.Users, err = s.usersFor(tx, evs[0].UserID, ids)
		return err
	})
	return out, err
}

// shortMessage converts updateNewMessage of a plain private text (no
// forward header, media or markup) into updateShortMessage.
func shortMessage(u tg.UpdateClass) (*tg.UpdateShortMessage, bool) {
	nm, ok := u.(*tg.UpdateNewMessage)
	if !ok {
		return nil, false
	}
	m, ok := nm.Message.(*tg.Message)
	if !ok || m.Media != nil || m.ReplyMarkup != nil || !m.FwdFrom.Zero() {
		return nil, false
	}
	peer, ok := m.PeerID.(*tg.PeerUser)
	if !ok {
		return nil, false
	}
	for _, e := range m.Entities {
		if _, ok := e.(*tg.MessageEntityMentionName); ok {
			return nil, false // names a third user: send it with the users
		}
	}
	return &tg.UpdateShortMessage{
		Out: m.Out, Silent: m.Silent, ID: m.ID, UserID: peer.UserID, Message: m.Message,
		Pts: nm.Pts, PtsCount: nm.PtsCount, Date: m.Date, ReplyTo: m.ReplyTo, Entities: m.Entities,
	}, true
}
