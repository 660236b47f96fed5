package messaging

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/storage"
)

// Login codes and their limits. A phone has one login record:
//
//	login/<phone>                LoginState: the current code and the
//	                             phone's sendCode flood window
//	logingc/<gc at>/<phone>      (empty) when the record may be deleted
//
// The gc index lets every SendCode sweep a few dead records, so records
// created for phones that never sign in do not pile up: at most
// SendCodeLimit codes per phone per window, and each record lives until
// its code expired and its window closed.
const (
	// CodeAttemptsMax is how many wrong codes one code survives; the
	// attempt that reaches it kills the code (PHONE_CODE_INVALID, then
	// PHONE_CODE_EXPIRED for every later attempt).
	CodeAttemptsMax = 5
	// SendCodeLimit codes may be requested per phone per SendCodeWindow;
	// the next request gets FLOOD_WAIT_X with X the seconds until the
	// window closes.
	SendCodeLimit = 5
	// SendCodeWindow is the flood window, seconds.
	SendCodeWindow = 3600
	// CodeLengthMin and CodeLengthMax bound a login code's digits.
	CodeLengthMin, CodeLengthMax = 4, 8
	// loginSweep is how many expired login records one SendCode deletes.
	loginSweep = 16
)

// Reject returns the error a command fails with when the state says no: it
// wraps ErrRejected and the Telegram RPC error the client is to get, so
// errors.As(err, new(*tgerr.Error)) finds the latter. Nothing the command
// wrote is kept.
func Reject(code int, msg string) error {
	return fmt.Errorf("%w: %w", ErrRejected, tgerr.New(code, msg))
}

// Domain errors of this file, Telegram's names.
var (
	errPhoneCodeExpired    = Reject(400, "PHONE_CODE_EXPIRED")
	errPhoneCodeInvalid    = Reject(400, "PHONE_CODE_INVALID")
	errPhoneNumberInvalid  = Reject(400, "PHONE_NUMBER_INVALID")
	errPhoneNumberOccupied = Reject(400, "PHONE_NUMBER_OCCUPIED")
	errFirstNameInvalid    = Reject(400, "FIRSTNAME_INVALID")
	errLastNameInvalid     = Reject(400, "LASTNAME_INVALID")
	errHashInvalid         = Reject(400, "HASH_INVALID")
)

// NormalizePhone turns a phone number as people write it ("+1 (555)
// 010-0000") into digits only. ok is false unless 5 to 15 digits (E.164's
// longest) remain and nothing but separators was dropped.
func NormalizePhone(s string) (phone string, ok bool) {
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		default:
			return "", false
		}
		if b.Len() > 15 {
			return "", false
		}
	}
	if b.Len() < 5 {
		return "", false
	}
	return b.String(), true
}

// TestPhoneCode returns the code a test number accepts: numbers 99966XYYYY
// take X repeated length times, as on Telegram's test servers (gotd's
// auth.Test relies on it).
func TestPhoneCode(phone string, length int) (string, bool) {
	if len(phone) != 10 || !strings.HasPrefix(phone, "99966") {
		return "", false
	}
	return strings.Repeat(phone[5:6], length), true
}

// LoginState is a phone's login record.
type LoginState struct {
	// Hash is the phone_code_hash naming the current code; empty when
	// there is none (never sent, used, expired or killed).
	Hash string `json:"hash,omitempty"`
	Code string `json:"code,omitempty"`
	// Expires is when the code stops working, unix seconds.
	Expires  int64 `json:"expires,omitempty"`
	Attempts int   `json:"attempts,omitempty"`
	// Verified is set when auth.signIn accepted the code for a phone with
	// no account: auth.signUp may now use the hash.
	Verified bool `json:"verified,omitempty"`
	// WindowStart and WindowCount are the sendCode flood window.
	WindowStart int64 `json:"window_start"`
	WindowCount int   `json:"window_count"`
	// GCAt is the record's entry in the gc index.
	GCAt int64 `json:"gc_at"`
}

func (s *LoginState) clearCode() {
	s.Hash, s.Code, s.Expires, s.Attempts, s.Verified = "", "", 0, 0, false
}

func getLogin(tx storage.Reader, phone string) (*LoginState, bool, error) {
	var s LoginState
	found, err := getJSON(tx, key("login", phone), &s)
	return &s, found, err
}

// putLogin stores the record and moves its gc index entry to the later of
// code expiry and window end.
func putLogin(tx *storage.Txn, phone string, s *LoginState) error {
	gc := max(s.Expires, s.WindowStart+SendCodeWindow)
	if gc != s.GCAt {
		if s.GCAt != 0 {
			if err := tx.Delete(key("logingc", s.GCAt, phone)); err != nil {
				return err
			}
		}
		s.GCAt = gc
		if err := tx.Set(key("logingc", gc, phone), nil); err != nil {
			return err
		}
	}
	return putJSON(tx, key("login", phone), s)
}

// sweepLogins deletes up to loginSweep records whose time is past.
func sweepLogins(tx *storage.Txn, now int64) error {
	prefix := key("logingc", "")
	type entry struct {
		at    int64
		phone string
	}
	var dead []entry
	err := tx.Iterate(prefix, nil, false, func(k, _ []byte) (bool, error) {
		if len(k) < len(prefix)+9 {
			return true, nil
		}
		at := int64(beUint64(k[len(prefix):]))
		if at > now {
			return false, nil
		}
		dead = append(dead, entry{at, string(k[len(prefix)+9:])})
		return len(dead) < loginSweep, nil
	})
	if err != nil {
		return err
	}
	for _, e := range dead {
		if err := tx.Delete(key("logingc", e.at, e.phone)); err != nil {
			return err
		}
		if err := tx.Delete(key("login", e.phone)); err != nil {
			return err
		}
	}
	return nil
}

// SendCode issues a login code for a phone (auth.sendCode, and
// auth.resendCode when Resend is set). The code's digits and its
// phone_code_hash come from env randomness, except for test numbers when
// TestNumbers is set.
type SendCode struct {
	// Phone is digits only (NormalizePhone).
	Phone string
	// Length is the code's digit count, CodeLengthMin..CodeLengthMax.
	Length int
	// TTL is the code's lifetime, seconds.
	TTL int64
	// TestNumbers lets 99966XYYYY numbers use code X repeated.
	TestNumbers bool
	// Resend, if not empty, is the hash of the code being replaced; it must
	// be the current one.
	Resend string
}

// SentCode is SendCode's result. Code is for the code sender only.
type SentCode struct {
	Hash   string
	Code   string
	Length int
	// Test is set for test numbers, whose code needs no delivery.
	Test bool
}

// Kind implements Command.
func (SendCode) Kind() string { return "auth.send_code" }

func (c SendCode) apply(tx *storage.Txn, env Env) (any, error) {
	if _, ok := NormalizePhone(c.Phone); !ok {
		return nil, errPhoneNumberInvalid
	}
	if c.Length < CodeLengthMin || c.Length > CodeLengthMax || c.TTL <= 0 {
		return nil, fmt.Errorf("send code: length %d, ttl %d out of range", c.Length, c.TTL)
	}
	if err := sweepLogins(tx, env.Now); err != nil {
		return nil, fmt.Errorf("sweep logins: %w", err)
	}
	s, _, err := getLogin(tx, c.Phone)
	if err != nil {
		return nil, err
	}
	if c.Resend != "" && (s.Hash == "" || !equalString(s.Hash, c.Resend) || env.Now >= s.Expires) {
		return nil, errPhoneCodeExpired
	}
	if s.WindowCount == 0 || env.Now >= s.WindowStart+SendCodeWindow {
		s.WindowStart, s.WindowCount = env.Now, 0
	}
	if s.WindowCount >= SendCodeLimit {
		wait := s.WindowStart + SendCodeWindow - env.Now
		return nil, Reject(420, fmt.Sprintf("FLOOD_WAIT_%d", wait))
	}
	s.WindowCount++
	code, test := "", false
	if c.TestNumbers {
		code, test = TestPhoneCode(c.Phone, c.Length)
	}
	if !test {
		code = randomDigits(env.Rand[:8], c.Length)
	}
	s.Hash = hex.EncodeToString(env.Rand[8:24])
	s.Code, s.Expires, s.Attempts, s.Verified = code, env.Now+c.TTL, 0, false
	if err := putLogin(tx, c.Phone, s); err != nil {
		return nil, err
	}
	return &SentCode{Hash: s.Hash, Code: code, Length: c.Length, Test: test}, nil
}

// randomDigits makes n decimal digits from 8 random bytes. The modulo bias
// is below 10^8/2^64.
func randomDigits(r []byte, n int) string {
	mod := uint64(1)
	for range n {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", n, binary.BigEndian.Uint64(r)%mod)
}

func equalString(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// CancelCode forgets a phone's code (auth.cancelCode).
type CancelCode struct {
	Phone, Hash string
}

// Kind implements Command.
func (CancelCode) Kind() string { return "auth.cancel_code" }

func (c CancelCode) apply(tx *storage.Txn, env Env) (any, error) {
	s, found, err := getLogin(tx, c.Phone)
	if err != nil {
		return nil, err
	}
	if !found || s.Hash == "" || !equalString(s.Hash, c.Hash) {
		return nil, errPhoneCodeExpired
	}
	s.clearCode()
	return true, putLogin(tx, c.Phone, s)
}

// Device describes the app an authorization is made from
// (initConnection's fields).
type Device struct {
	Model, System, App string
	APIID              int
}

// SignIn checks a login code (auth.signIn). A wrong code is recorded
// before the command answers, so its result carries the rejection in Err
// instead of failing the command.
type SignIn struct {
	Phone, Hash, Code string
	// PermKeyID is the key the authorization is made for.
	PermKeyID int64
	Device    Device
	// KeyDC is the DC the key lives in when another DC carried the call
	// here (routing.assist); 0 for this DC's keys.
	KeyDC int `json:",omitempty"`
}

// SignInResult is SignIn's and SignUp's result. Err, if set, is the
// Telegram error the client gets (the attempt was recorded). Otherwise
// either SignUpRequired is set or User and Auth are the new session.
type SignInResult struct {
	Err            error
	SignUpRequired bool
	User           *User
	Auth           *Authorization
}

// Kind implements Command.
func (SignIn) Kind() string { return "auth.sign_in" }

func (c SignIn) apply(tx *storage.Txn, env Env) (any, error) {
	s, found, err := getLogin(tx, c.Phone)
	if err != nil {
		return nil, err
	}
	if !found || s.Hash == "" || !equalString(s.Hash, c.Hash) {
		return nil, errPhoneCodeExpired
	}
	if env.Now >= s.Expires {
		s.clearCode()
		return &SignInResult{Err: tgerr.New(400, "PHONE_CODE_EXPIRED")}, putLogin(tx, c.Phone, s)
	}
	if !equalString(s.Code, c.Code) {
		s.Attempts++
		if s.Attempts >= CodeAttemptsMax {
			s.clearCode()
		}
		return &SignInResult{Err: tgerr.New(400, "PHONE_CODE_INVALID")}, putLogin(tx, c.Phone, s)
	}
	uid, registered, err := UserByPhone(tx, c.Phone)
	if err != nil {
		return nil, err
	}
	if !registered {
		s.Verified = true
		return &SignInResult{SignUpRequired: true}, putLogin(tx, c.Phone, s)
	}
	s.clearCode()
	if err := putLogin(tx, c.Phone, s); err != nil {
		return nil, err
	}
	u, ok, err := GetUser(tx, uid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("phone index names missing user %d", uid)
	}
	a, err := authorize(tx, env, u.ID, c.PermKeyID, c.Device, c.KeyDC)
	if err != nil {
		return nil, err
	}
	return &SignInResult{User: u, Auth: a}, nil
}

// authorize signs uid in on a permanent key, replacing whoever was signed
// in on it.
func authorize(tx *storage.Txn, env Env, uid, permKeyID int64, d Device, keyDC int) (*Authorization, error) {
	if permKeyID == 0 {
		return nil, fmt.Errorf("authorize: no permanent key")
	}
	if old, ok, err := GetAuthorization(tx, permKeyID); err != nil {
		return nil, err
	} else if ok {
		if err := DeleteAuthorization(tx, env, old); err != nil {
			return nil, err
		}
	}
	hash := int64(binary.BigEndian.Uint64(env.Rand[24:32]) &^ (1 << 63))
	if hash == 0 {
		hash = 1
	}
	a := &Authorization{
		PermKeyID: permKeyID,
		UserID:    uid,
		Created:   env.Now,
		Device:    d.Model,
		Platform:  d.System,
		App:       d.App,
		APIID:     d.APIID,
		Hash:      hash,
		KeyDC:     keyDC,
	}
	return a, PutAuthorization(tx, env, a)
}

// SignUp registers the phone whose code SignIn verified (auth.signUp) and
// signs the new user in.
type SignUp struct {
	Phone, Hash         string
	FirstName, LastName string
	// DC is the home DC of the new user id.
	DC        int
	PermKeyID int64
	Device    Device
	// KeyDC is as in SignIn.
	KeyDC int `json:",omitempty"`
}

// Kind implements Command.
func (SignUp) Kind() string { return "auth.sign_up" }

func (c SignUp) apply(tx *storage.Txn, env Env) (any, error) {
	first, last, err := cleanNames(c.FirstName, c.LastName)
	if err != nil {
		return nil, err
	}
	if _, taken, err := UserByPhone(tx, c.Phone); err != nil {
		return nil, err
	} else if taken {
		return nil, errPhoneNumberOccupied
	}
	s, found, err := getLogin(tx, c.Phone)
	if err != nil {
		return nil, err
	}
	if !found || s.Hash == "" || !equalString(s.Hash, c.Hash) || env.Now >= s.Expires {
		return nil, errPhoneCodeExpired
	}
	if !s.Verified {
		return nil, errPhoneCodeInvalid
	}
	s.clearCode()
	if err := putLogin(tx, c.Phone, s); err != nil {
		return nil, err
	}
	id, err := newUserID(tx, c.DC)
	if err != nil {
		return nil, err
	}
	u := &User{ID: id, Phone: c.Phone, FirstName: first, LastName: last, Created: env.Now}
	if err := PutUser(tx, u); err != nil {
		return nil, err
	}
	a, err := authorize(tx, env, u.ID, c.PermKeyID, c.Device, c.KeyDC)
	if err != nil {
		return nil, err
	}
	return &SignInResult{User: u, Auth: a}, nil
}

// LogOut ends the authorization of a permanent key (auth.logOut). Its
// result is true if there was one.
type LogOut struct {
	PermKeyID int64
}

// Kind implements Command.
func (LogOut) Kind() string { return "auth.log_out" }

func (c LogOut) apply(tx *storage.Txn, env Env) (any, error) {
	a, ok, err := GetAuthorization(tx, c.PermKeyID)
	if err != nil || !ok {
		return false, err
	}
	return true, DeleteAuthorization(tx, env, a)
}

// ResetAuthorizations ends every authorization of a user except Keep's
// (auth.resetAuthorizations). Its result is the perm key ids logged out.
type ResetAuthorizations struct {
	UserID, Keep int64
}

// Kind implements Command.
func (ResetAuthorizations) Kind() string { return "auth.reset_authorizations" }

func (c ResetAuthorizations) apply(tx *storage.Txn, env Env) (any, error) {
	perms, err := UserAuthorizations(tx, c.UserID)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, p := range perms {
		if p == c.Keep {
			continue
		}
		a, ok, err := GetAuthorization(tx, p)
		if err != nil {
			return nil, err
		}
		if !ok {
			a = &Authorization{PermKeyID: p, UserID: c.UserID}
		}
		if err := DeleteAuthorization(tx, env, a); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ResetAuthorization ends one of a user's other authorizations, named by
// its hash (account.resetAuthorization). Its result is the perm key id
// logged out. The current authorization (Current) cannot be named: it is
// shown with hash 0 and ended with auth.logOut.
type ResetAuthorization struct {
	UserID, Hash, Current int64
}

// Kind implements Command.
func (ResetAuthorization) Kind() string { return "account.reset_authorization" }

func (c ResetAuthorization) apply(tx *storage.Txn, env Env) (any, error) {
	if c.Hash == 0 {
		return nil, errHashInvalid
	}
	perms, err := UserAuthorizations(tx, c.UserID)
	if err != nil {
		return nil, err
	}
	for _, p := range perms {
		if p == c.Current {
			continue
		}
		a, ok, err := GetAuthorization(tx, p)
		if err != nil {
			return nil, err
		}
		if ok && a.Hash == c.Hash {
			return p, DeleteAuthorization(tx, env, a)
		}
	}
	return nil, errHashInvalid
}
