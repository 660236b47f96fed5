package api

import (
	"context"
	"slices"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// authorizationTTLDays is what account.getAuthorizations announces: how
// long an unused session lives. Sessions do not expire yet; Telegram's
// default is shown.
const authorizationTTLDays = 183

var errUsernameInvalid = tgerr.New(400, "USERNAME_INVALID")

func (s *Service) registerAccount() {
	s.d.OnAccountGetAuthorizations(s.accountGetAuthorizations)
	s.d.OnAccountResetAuthorization(s.accountResetAuthorization)
	s.d.OnAccountUpdateProfile(s.accountUpdateProfile)
	s.d.OnAccountUpdateUsername(s.accountUpdateUsername)
	s.d.OnAccountCheckUsername(s.accountCheckUsername)
	s.d.OnAccountUpdateStatus(s.accountUpdateStatus)
}

// accountGetAuthorizations lists the user's sessions, the calling one first
// with hash 0, as Telegram shows it.
func (s *Service) accountGetAuthorizations(ctx context.Context) (*tg.AccountAuthorizations, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	perm, err := permKey(ctx)
	if err != nil {
		return nil, err
	}
	out := &tg.AccountAuthorizations{AuthorizationTTLDays: authorizationTTLDays}
	err = s.viewState(ctx, "account.getAuthorizations", func(tx storage.Reader) error {
		perms, err := messaging.UserAuthorizations(tx, uid)
		if err != nil {
			return err
		}
		for _, p := range perms {
			a, ok, err := messaging.GetAuthorization(tx, p)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			ta := tg.Authorization{
				Current:       p == perm,
				Hash:          a.Hash,
				DeviceModel:   a.Device,
				Platform:      a.Platform,
				SystemVersion: a.Platform,
				APIID:         a.APIID,
				AppName:       "",
				AppVersion:    a.App,
				DateCreated:   int(a.Created),
				DateActive:    int(a.Created),
				IP:            a.IP,
			}
			if ta.Current {
				ta.Hash = 0
			}
			out.Authorizations = append(out.Authorizations, ta)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out.Authorizations, func(a, b tg.Authorization) int {
		switch {
		case a.Current == b.Current:
			return 0
		case a.Current:
			return -1
		}
		return 1
	})
	return out, nil
}

func (s *Service) accountResetAuthorization(ctx context.Context, hash int64) (bool, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	perm, err := permKey(ctx)
	if err != nil {
		return false, err
	}
	res, err := s.applyCommand(ctx, "account.resetAuthorization", messaging.ResetAuthorization{UserID: uid, Hash: hash, Current: perm})
	if err != nil {
		return false, err
	}
	s.log.Info("authorization reset", "user", uid, "perm_key", res.(int64))
	return true, nil
}

func (s *Service) accountUpdateProfile(ctx context.Context, req *tg.AccountUpdateProfileRequest) (tg.UserClass, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	cmd := messaging.UpdateProfile{UserID: uid, Auth: callFrom(ctx).PermKeyID}
	if v, ok := req.GetFirstName(); ok {
		cmd.FirstName = &v
	}
	if v, ok := req.GetLastName(); ok {
		cmd.LastName = &v
	}
	if v, ok := req.GetAbout(); ok {
		cmd.About = &v
	}
	if _, err := s.applyCommand(ctx, "account.updateProfile", cmd); err != nil {
		return nil, err
	}
	return s.selfUser(ctx, "account.updateProfile", uid)
}

func (s *Service) accountUpdateUsername(ctx context.Context, username string) (tg.UserClass, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	cmd := messaging.UpdateUsername{UserID: uid, Username: username, Auth: callFrom(ctx).PermKeyID}
	if s.opts.ClaimUsername != nil {
		// In a federation the name is first claimed where the
		// federation's usernames are kept, so no two DCs give it out.
		if username != "" && !messaging.ValidUsername(username) {
			return nil, errUsernameInvalid
		}
		var old string
		if err := s.viewState(ctx, "account.updateUsername", func(tx storage.Reader) error {
			u, ok, err := messaging.GetUser(tx, uid)
			if err == nil && !ok {
				return errUserInvalid
			}
			if u != nil {
				old = u.Username
			}
			return err
		}); err != nil {
			return nil, err
		}
		if old == username {
			return nil, tgerr.New(400, "USERNAME_NOT_MODIFIED")
		}
		claimed, err := s.opts.ClaimUsername(ctx, uid, old, username)
		if err != nil {
			return nil, s.commandError("account.updateUsername", err)
		}
		cmd.Claimed = claimed
	}
	if _, err := s.applyCommand(ctx, "account.updateUsername", cmd); err != nil {
		return nil, err
	}
	return s.selfUser(ctx, "account.updateUsername", uid)
}

// selfUser renders the caller's own user.
func (s *Service) selfUser(ctx context.Context, method string, uid int64) (tg.UserClass, error) {
	var out *tg.User
	err := s.viewState(ctx, method, func(tx storage.Reader) error {
		var err error
		out, err = s.userFor(tx, uid, uid)
		if err == nil && out == nil {
			return errUserInvalid
		}
		return err
	})
	return out, err
}

// accountCheckUsername reports whether the caller could take username:
// false when someone else has it.
func (s *Service) accountCheckUsername(ctx context.Context, username string) (bool, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	if !messaging.ValidUsername(username) {
		return false, errUsernameInvalid
	}
	free := false
	err = s.viewState(ctx, "account.checkUsername", func(tx storage.Reader) error {
		owner, taken, err := messaging.UserByUsername(tx, username)
		free = !taken || owner == uid
		return err
	})
	return free, err
}

// accountUpdateStatus accepts online/offline reports. Presence is not
// tracked yet, so there is nothing to store.
func (s *Service) accountUpdateStatus(ctx context.Context, offline bool) (bool, error) {
	if _, err := s.self(ctx); err != nil {
		return false, err
	}
	return true, nil
}
