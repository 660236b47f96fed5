package api

import (
	"context"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// usersGetMax bounds one users.getUsers call.
const usersGetMax = 200

var errLimitInvalid = tgerr.New(400, "LIMIT_INVALID")

func (s *Service) registerUsers() {
	s.d.OnUsersGetUsers(s.usersGetUsers)
	s.d.OnUsersGetFullUser(s.usersGetFullUser)
}

// userFor renders uid as viewer sees it: the viewer's access hash, contact
// flags, the names the viewer saved the contact under, and the phone when
// either side has the other in contacts (the viewer knows the number, or
// the user's default privacy shows it to their contacts). It returns nil
// if there is no such user. Every namespace renders users through it.
func (s *Service) userFor(tx storage.Reader, viewer, uid int64) (*tg.User, error) {
	u, ok, err := messaging.GetUser(tx, uid)
	if err != nil || !ok {
		return nil, err
	}
	if uid == viewer {
		return s.tgUser(viewer, u, userView{}), nil
	}
	c, contact, err := messaging.GetContact(tx, viewer, uid)
	if err != nil {
		return nil, err
	}
	reverse, err := messaging.IsContact(tx, uid, viewer)
	if err != nil {
		return nil, err
	}
	if contact && (c.FirstName != "" || c.LastName != "") {
		shown := *u
		shown.FirstName, shown.LastName = c.FirstName, c.LastName
		u = &shown
	}
	return s.tgUser(viewer, u, userView{contact: contact, mutual: contact && reverse, showPhone: contact || reverse}), nil
}

// usersFor renders the users among ids that exist, each once, in order.
func (s *Service) usersFor(tx storage.Reader, viewer int64, ids []int64) ([]tg.UserClass, error) {
	out := make([]tg.UserClass, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		u, err := s.userFor(tx, viewer, id)
		if err != nil {
			return nil, err
		}
		if u != nil {
			out = append(out, u)
		}
	}
	return out, nil
}

// usersGetUsers returns the users the caller may name; ids with a wrong
// access hash or no user are left out, as Telegram does.
func (s *Service) usersGetUsers(ctx context.Context, in []tg.InputUserClass) ([]tg.UserClass, error) {
	viewer, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if len(in) > usersGetMax {
		return nil, errLimitInvalid
	}
	var out []tg.UserClass
	err = s.viewState(ctx, "users.getUsers", func(tx storage.Reader) error {
		ids := make([]int64, 0, len(in))
		for _, iu := range in {
			id, err := s.resolveUser(tx, viewer, iu)
			if err == nil {
				ids = append(ids, id)
			} else if _, isRPC := tgerr.As(err); !isRPC {
				return err
			}
		}
		out, err = s.usersFor(tx, viewer, ids)
		return err
	})
	return out, err
}

func (s *Service) usersGetFullUser(ctx context.Context, in tg.InputUserClass) (*tg.UsersUserFull, error) {
	viewer, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	var out *tg.UsersUserFull
	err = s.viewState(ctx, "users.getFullUser", func(tx storage.Reader) error {
		id, err := s.resolveUser(tx, viewer, in)
		if err != nil {
			return err
		}
		u, ok, err := messaging.GetUser(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return errUserInvalid
		}
		blocked, err := messaging.IsBlocked(tx, viewer, id)
		if err != nil {
			return err
		}
		shown, err := s.userFor(tx, viewer, id)
		if err != nil {
			return err
		}
		out = &tg.UsersUserFull{
			FullUser: tg.UserFull{
				ID:             id,
				About:          u.About,
				Blocked:        blocked,
				Settings:       tg.PeerSettings{},
				NotifySettings: tg.PeerNotifySettings{},
			},
			Chats: []tg.ChatClass{},
			Users: []tg.UserClass{shown},
		}
		return nil
	})
	return out, err
}
