package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// Sign-in errors answered before any command runs.
var (
	errPhoneNumberInvalid = tgerr.New(400, "PHONE_NUMBER_INVALID")
	errPhoneCodeEmpty     = tgerr.New(400, "PHONE_CODE_EMPTY")
	errPhoneCodeHashEmpty = tgerr.New(400, "PHONE_CODE_HASH_EMPTY")
	errCodeSendFailed     = tgerr.New(400, "SMS_CODE_CREATE_FAILED")
	errAuthKeyPermEmpty   = tgerr.New(401, "AUTH_KEY_PERM_EMPTY")
)

func (s *Service) registerAuth() {
	s.d.OnAuthSendCode(s.authSendCode)
	s.d.OnAuthResendCode(s.authResendCode)
	s.d.OnAuthCancelCode(s.authCancelCode)
	s.d.OnAuthSignIn(s.authSignIn)
	s.d.OnAuthSignUp(s.authSignUp)
	s.d.OnAuthLogOut(s.authLogOut)
	s.d.OnAuthResetAuthorizations(s.authResetAuthorizations)
}

// applyCommand proposes cmd with a fresh Env and returns its result. A
// command the state rejects gives the client its Telegram error; anything
// else is logged and answered INTERNAL.
func (s *Service) applyCommand(ctx context.Context, method string, cmd messaging.Command) (any, error) {
	env, err := s.env()
	if err != nil {
		return nil, s.internal(method, err)
	}
	res, err := s.m.Apply(ctx, cmd, env)
	if err != nil {
		return nil, s.commandError(method, err)
	}
	return res, nil
}

// commandError maps a failed command to what the client sees.
func (s *Service) commandError(method string, err error) error {
	var te *tgerr.Error
	if errors.Is(err, messaging.ErrRejected) && errors.As(err, &te) {
		return te
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, messaging.ErrUnavailable) {
		return err
	}
	return s.internal(method, err)
}

// viewState runs fn on a consistent snapshot. A Telegram error fn returns
// reaches the client as is; anything else is logged and answered INTERNAL.
func (s *Service) viewState(ctx context.Context, method string, fn func(tx storage.Reader) error) error {
	err := s.m.View(ctx, fn)
	if err == nil {
		return nil
	}
	var te *tgerr.Error
	if errors.As(err, &te) {
		return te
	}
	if errors.Is(err, messaging.ErrUnavailable) {
		return err // a clustered node's read found no leader: retried
	}
	return s.internal(method, err)
}

// device describes the calling app from its initConnection.
func (s *Service) device(ctx context.Context) messaging.Device {
	call := callFrom(ctx)
	if call == nil {
		return messaging.Device{}
	}
	c := call.Client
	if c == nil {
		return messaging.Device{}
	}
	return messaging.Device{Model: c.DeviceModel, System: c.SystemVersion, App: c.AppVersion, APIID: c.APIID}
}

// homePhone normalizes a number a login method names, and answers
// PHONE_MIGRATE_X when the number's home is DC X, not this one: an account
// lives in one DC, and its sign-up and sign-in happen there.
func (s *Service) homePhone(raw string) (string, error) {
	phone, ok := messaging.NormalizePhone(raw)
	if !ok {
		return "", errPhoneNumberInvalid
	}
	if s.opts.PhoneHome != nil {
		if home := s.opts.PhoneHome(phone); home != s.opts.DC {
			return "", tgerr.New(303, fmt.Sprintf("PHONE_MIGRATE_%d", home))
		}
	}
	return phone, nil
}

// keyDC is the DC of the caller's key when another DC carried the call
// here, 0 for this DC's keys.
func keyDC(ctx context.Context) int {
	if call := callFrom(ctx); call != nil {
		return call.KeyDC
	}
	return 0
}

// permKey is the permanent key an authorization hangs off; a temporary key
// not bound yet cannot sign in.
func permKey(ctx context.Context) (int64, error) {
	call := callFrom(ctx)
	if call == nil || call.PermKeyID == 0 {
		return 0, errAuthKeyPermEmpty
	}
	return call.PermKeyID, nil
}

func (s *Service) authSendCode(ctx context.Context, req *tg.AuthSendCodeRequest) (tg.AuthSentCodeClass, error) {
	return s.sendCode(ctx, "auth.sendCode", req.PhoneNumber, "")
}

func (s *Service) authResendCode(ctx context.Context, req *tg.AuthResendCodeRequest) (tg.AuthSentCodeClass, error) {
	if req.PhoneCodeHash == "" {
		return nil, errPhoneCodeHashEmpty
	}
	return s.sendCode(ctx, "auth.resendCode", req.PhoneNumber, req.PhoneCodeHash)
}

// sendCode issues a code and hands it to the code sender after the command
// committed; test numbers need no delivery.
func (s *Service) sendCode(ctx context.Context, method, rawPhone, resend string) (tg.AuthSentCodeClass, error) {
	phone, err := s.homePhone(rawPhone)
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, method, messaging.SendCode{
		Phone:       phone,
		Length:      s.opts.CodeLength,
		TTL:         int64(s.opts.CodeTTL.Seconds()),
		TestNumbers: s.opts.TestNumbers,
		Resend:      resend,
	})
	if err != nil {
		return nil, err
	}
	sent := res.(*messaging.SentCode)
	if !sent.Test {
		if err := s.opts.Codes.SendCode(ctx, phone, sent.Code); err != nil {
			// The error may name the gateway, never the code; the phone
			// only at debug level.
			s.log.Error("login code delivery failed", "err", err)
			s.log.Debug("login code delivery failed", "phone", phone)
			return nil, errCodeSendFailed
		}
	}
	s.log.Debug("login code issued", "phone", phone, "test", sent.Test)
	return &tg.AuthSentCode{
		Type:          &tg.AuthSentCodeTypeSMS{Length: sent.Length},
		PhoneCodeHash: sent.Hash,
	}, nil
}

func (s *Service) authCancelCode(ctx context.Context, req *tg.AuthCancelCodeRequest) (bool, error) {
	phone, err := s.homePhone(req.PhoneNumber)
	if err != nil {
		return false, err
	}
	if req.PhoneCodeHash == "" {
		return false, errPhoneCodeHashEmpty
	}
	if _, err := s.applyCommand(ctx, "auth.cancelCode", messaging.CancelCode{Phone: phone, Hash: req.PhoneCodeHash}); err != nil {
		return false, err
	}
	return true, nil
}

func (s *Service) authSignIn(ctx context.Context, req *tg.AuthSignInRequest) (tg.AuthAuthorizationClass, error) {
	phone, err := s.homePhone(req.PhoneNumber)
	if err != nil {
		return nil, err
	}
	if req.PhoneCodeHash == "" {
		return nil, errPhoneCodeHashEmpty
	}
	if req.PhoneCode == "" {
		return nil, errPhoneCodeEmpty
	}
	perm, err := permKey(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, "auth.signIn", messaging.SignIn{
		Phone: phone, Hash: req.PhoneCodeHash, Code: req.PhoneCode,
		PermKeyID: perm, Device: s.device(ctx), KeyDC: keyDC(ctx),
	})
	if err != nil {
		return nil, err
	}
	return s.authorization("auth.signIn", res.(*messaging.SignInResult))
}

func (s *Service) authSignUp(ctx context.Context, req *tg.AuthSignUpRequest) (tg.AuthAuthorizationClass, error) {
	phone, err := s.homePhone(req.PhoneNumber)
	if err != nil {
		return nil, err
	}
	if req.PhoneCodeHash == "" {
		return nil, errPhoneCodeHashEmpty
	}
	perm, err := permKey(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, "auth.signUp", messaging.SignUp{
		Phone: phone, Hash: req.PhoneCodeHash,
		FirstName: req.FirstName, LastName: req.LastName,
		DC: s.opts.DC, PermKeyID: perm, Device: s.device(ctx), KeyDC: keyDC(ctx),
	})
	if err != nil {
		return nil, err
	}
	return s.authorization("auth.signUp", res.(*messaging.SignInResult))
}

// authorization answers signIn and signUp.
func (s *Service) authorization(method string, r *messaging.SignInResult) (tg.AuthAuthorizationClass, error) {
	switch {
	case r.Err != nil:
		return nil, r.Err
	case r.SignUpRequired:
		return &tg.AuthAuthorizationSignUpRequired{}, nil
	case r.User == nil:
		return nil, s.internal(method, errors.New("no user signed in"))
	}
	s.log.Info("signed in", "user", r.User.ID, "perm_key", r.Auth.PermKeyID)
	return &tg.AuthAuthorization{User: s.tgUser(r.User.ID, r.User, userView{})}, nil
}

func (s *Service) authLogOut(ctx context.Context) (*tg.AuthLoggedOut, error) {
	if _, err := s.self(ctx); err != nil {
		return nil, err
	}
	perm, err := permKey(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.applyCommand(ctx, "auth.logOut", messaging.LogOut{PermKeyID: perm}); err != nil {
		return nil, err
	}
	return &tg.AuthLoggedOut{}, nil
}

func (s *Service) authResetAuthorizations(ctx context.Context) (bool, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	perm, err := permKey(ctx)
	if err != nil {
		return false, err
	}
	if _, err := s.applyCommand(ctx, "auth.resetAuthorizations", messaging.ResetAuthorizations{UserID: uid, Keep: perm}); err != nil {
		return false, err
	}
	return true, nil
}
