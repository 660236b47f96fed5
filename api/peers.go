package api

import (
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// Errors for peers a caller may not name.
var (
	errUserInvalid = tgerr.New(400, "USER_ID_INVALID")
	errPeerInvalid = tgerr.New(400, "PEER_ID_INVALID")
)

// resolveUser turns an InputUser into a user id, checking the access hash
// the viewer presented. inputUserSelf is the viewer.
func (s *Service) resolveUser(tx storage.Reader, viewer int64, in tg.InputUserClass) (int64, error) {
	switch u := in.(type) {
	case *tg.InputUserSelf:
		return viewer, nil
	case *tg.InputUser:
		return s.checkUser(tx, viewer, u.UserID, u.AccessHash, errUserInvalid)
	default:
		return 0, errUserInvalid
	}
}

// resolvePeer turns an InputPeer naming a user into a user id. Chats and
// channels come with their issues.
func (s *Service) resolvePeer(tx storage.Reader, viewer int64, in tg.InputPeerClass) (int64, error) {
	switch p := in.(type) {
	case *tg.InputPeerSelf:
		return viewer, nil
	case *tg.InputPeerUser:
		return s.checkUser(tx, viewer, p.UserID, p.AccessHash, errPeerInvalid)
	default:
		return 0, errPeerInvalid
	}
}

func (s *Service) checkUser(tx storage.Reader, viewer, id, hash int64, bad error) (int64, error) {
	if id == viewer {
		return id, nil
	}
	if !s.opts.Access.Check(viewer, id, hash) {
		return 0, bad
	}
	if _, ok, err := messaging.GetUser(tx, id); err != nil {
		return 0, err
	} else if !ok {
		return 0, bad
	}
	return id, nil
}

// userView says how one user appears to a viewer.
type userView struct {
	contact, mutual bool
	// phone is shown to contacts and to the user themself.
	showPhone bool
}

// tgUser renders u as viewer sees it: its access hash is the viewer's.
func (s *Service) tgUser(viewer int64, u *messaging.User, v userView) *tg.User {
	out := &tg.User{
		ID:            u.ID,
		AccessHash:    s.opts.Access.For(viewer, u.ID),
		FirstName:     u.FirstName,
		LastName:      u.LastName,
		Self:          u.ID == viewer,
		Contact:       v.contact,
		MutualContact: v.mutual,
	}
	if u.Username != "" {
		out.Username = u.Username
	}
	if v.showPhone || u.ID == viewer {
		out.Phone = u.Phone
	}
	out.SetFlags()
	return out
}
