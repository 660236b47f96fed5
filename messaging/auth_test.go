package messaging

import (
	"context"
	"errors"
	"testing"

	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/storage"
)

// rpcType returns the Telegram error type err carries, "" for none.
func rpcType(err error) string {
	var te *tgerr.Error
	if errors.As(err, &te) {
		return te.Message
	}
	return ""
}

// envAt returns an Env at time now whose randomness is seed repeated.
func envAt(now int64, seed byte) Env {
	e := Env{Now: now}
	for i := range e.Rand {
		e.Rand[i] = seed + byte(i)
	}
	return e
}

func apply[T any](t *testing.T, m *Machine, cmd Command, env Env) T {
	t.Helper()
	res, err := m.Apply(context.Background(), cmd, env)
	if err != nil {
		t.Fatalf("%s: %v", cmd.Kind(), err)
	}
	out, ok := res.(T)
	if !ok {
		t.Fatalf("%s: result %T", cmd.Kind(), res)
	}
	return out
}

func sendCode(t *testing.T, m *Machine, phone string, now int64) *SentCode {
	t.Helper()
	return apply[*SentCode](t, m, SendCode{Phone: phone, Length: 5, TTL: 300, TestNumbers: true}, envAt(now, byte(now)))
}

// signUp registers phone and signs it in on perm; it returns the user.
func signUp(t *testing.T, m *Machine, phone, first string, perm int64, now int64) *User {
	t.Helper()
	sent := sendCode(t, m, phone, now)
	r := apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: perm}, envAt(now, 1))
	if !r.SignUpRequired {
		t.Fatalf("sign in of new phone: %+v", r)
	}
	r = apply[*SignInResult](t, m, SignUp{Phone: phone, Hash: sent.Hash, FirstName: first, DC: 1, PermKeyID: perm}, envAt(now, byte(perm)))
	return r.User
}

func TestNormalizePhone(t *testing.T) {
	for in, want := range map[string]string{
		"+1 (555) 010-0000": "15550100000",
		"9996612345":        "9996612345",
		" 44.20.7946.0000 ": "442079460000",
		"12345":             "12345",
		"1234":              "",
		"+1234567890123456": "",
		"555-CALL":          "",
		"1+2345":            "",
		"":                  "",
	} {
		got, ok := NormalizePhone(in)
		if got != want || ok != (want != "") {
			t.Errorf("NormalizePhone(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestSignUpThenSignIn(t *testing.T) {
	m, _ := openMachine(t, nil)
	ctx := context.Background()
	const phone = "9996612345"

	sent := sendCode(t, m, phone, 1000)
	if sent.Code != "11111" || !sent.Test || len(sent.Hash) != 32 {
		t.Fatalf("test number code: %+v", sent)
	}
	// A wrong code is recorded and answered, not failed.
	r := apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: "22222", PermKeyID: 7}, envAt(1001, 1))
	if rpcType(r.Err) != "PHONE_CODE_INVALID" {
		t.Fatalf("wrong code: %+v", r)
	}
	// A wrong hash names no code.
	if _, err := m.Apply(ctx, SignIn{Phone: phone, Hash: "x", Code: "11111", PermKeyID: 7}, envAt(1001, 1)); rpcType(err) != "PHONE_CODE_EXPIRED" {
		t.Fatalf("wrong hash: %v", err)
	}
	// sign up before the code was verified
	if _, err := m.Apply(ctx, SignUp{Phone: phone, Hash: sent.Hash, FirstName: "A", DC: 1, PermKeyID: 7}, envAt(1001, 1)); rpcType(err) != "PHONE_CODE_INVALID" {
		t.Fatalf("unverified sign up: %v", err)
	}
	r = apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: "11111", PermKeyID: 7}, envAt(1002, 1))
	if !r.SignUpRequired {
		t.Fatalf("unregistered phone: %+v", r)
	}
	if _, err := m.Apply(ctx, SignUp{Phone: phone, Hash: sent.Hash, FirstName: "  ", DC: 1, PermKeyID: 7}, envAt(1003, 1)); rpcType(err) != "FIRSTNAME_INVALID" {
		t.Fatalf("blank first name: %v", err)
	}
	r = apply[*SignInResult](t, m, SignUp{Phone: phone, Hash: sent.Hash, FirstName: " Ann ", LastName: "Lee", DC: 2, PermKeyID: 7}, envAt(1003, 1))
	u := r.User
	if u.FirstName != "Ann" || u.LastName != "Lee" || HomeDC(u.ID) != 2 || u.Phone != phone || r.Auth.UserID != u.ID || r.Auth.Hash == 0 {
		t.Fatalf("signed up %+v, auth %+v", u, r.Auth)
	}
	// The hash was used up.
	if _, err := m.Apply(ctx, SignUp{Phone: phone, Hash: sent.Hash, FirstName: "B", DC: 1, PermKeyID: 8}, envAt(1004, 1)); rpcType(err) != "PHONE_NUMBER_OCCUPIED" {
		t.Fatalf("second sign up: %v", err)
	}

	// A second device signs in.
	sent = sendCode(t, m, phone, 1010)
	r = apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: 8, Device: Device{Model: "pc"}}, envAt(1011, 9))
	if r.User == nil || r.User.ID != u.ID || r.Auth.Device != "pc" {
		t.Fatalf("sign in: %+v", r)
	}
	err := m.View(func(tx storage.Reader) error {
		perms, err := UserAuthorizations(tx, u.ID)
		if len(perms) != 2 || perms[0] != 7 || perms[1] != 8 {
			t.Errorf("authorizations %v", perms)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRandomCodes(t *testing.T) {
	m, _ := openMachine(t, nil)
	// Without test numbers a test number gets a random code like any other.
	a := apply[*SentCode](t, m, SendCode{Phone: "9996612345", Length: 6, TTL: 60}, envAt(10, 3))
	b := apply[*SentCode](t, m, SendCode{Phone: "15550100000", Length: 6, TTL: 60}, envAt(10, 3))
	if a.Test || a.Code == "111111" || len(a.Code) != 6 || a.Code != b.Code || a.Hash != b.Hash {
		t.Fatalf("codes from equal randomness: %+v %+v", a, b)
	}
	c := apply[*SentCode](t, m, SendCode{Phone: "15550100000", Length: 6, TTL: 60}, envAt(11, 4))
	if c.Hash == b.Hash {
		t.Fatal("hash did not change")
	}
	// The old hash is dead once a new code is sent.
	if _, err := m.Apply(context.Background(), SignIn{Phone: "15550100000", Hash: b.Hash, Code: b.Code, PermKeyID: 1}, envAt(12, 0)); rpcType(err) != "PHONE_CODE_EXPIRED" {
		t.Fatalf("replaced code: %v", err)
	}
	if _, err := m.Apply(context.Background(), SendCode{Phone: "12ab", Length: 5, TTL: 60}, envAt(12, 0)); rpcType(err) != "PHONE_NUMBER_INVALID" {
		t.Fatalf("bad phone: %v", err)
	}
}

func TestCodeAttemptsLimit(t *testing.T) {
	m, _ := openMachine(t, nil)
	const phone = "9996612345"
	sent := sendCode(t, m, phone, 100)
	for i := 1; i <= CodeAttemptsMax; i++ {
		r := apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: "00000", PermKeyID: 1}, envAt(100, 0))
		if rpcType(r.Err) != "PHONE_CODE_INVALID" {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
	// The code is dead, even the right one.
	if _, err := m.Apply(context.Background(), SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: 1}, envAt(101, 0)); rpcType(err) != "PHONE_CODE_EXPIRED" {
		t.Fatalf("after the limit: %v", err)
	}
}

func TestCodeExpires(t *testing.T) {
	m, _ := openMachine(t, nil)
	const phone = "9996612345"
	sent := sendCode(t, m, phone, 100)
	r := apply[*SignInResult](t, m, SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: 1}, envAt(400, 0))
	if rpcType(r.Err) != "PHONE_CODE_EXPIRED" {
		t.Fatalf("expired code: %+v", r)
	}
	if _, err := m.Apply(context.Background(), SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: 1}, envAt(401, 0)); rpcType(err) != "PHONE_CODE_EXPIRED" {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestSendCodeFloodWait(t *testing.T) {
	m, _ := openMachine(t, nil)
	const phone = "15550100000"
	for i := 0; i < SendCodeLimit; i++ {
		sendCode(t, m, phone, 1000+int64(i))
	}
	_, err := m.Apply(context.Background(), SendCode{Phone: phone, Length: 5, TTL: 300}, envAt(1600, 0))
	var te *tgerr.Error
	if !errors.As(err, &te) || te.Code != 420 || te.Type != "FLOOD_WAIT" || te.Argument != SendCodeWindow-600 {
		t.Fatalf("flood: %v", err)
	}
	// Another phone is not affected; the window ends.
	sendCode(t, m, "15550100001", 1600)
	sendCode(t, m, phone, 1000+SendCodeWindow)
}

func TestLoginRecordsAreSwept(t *testing.T) {
	m, _ := openMachine(t, nil)
	sendCode(t, m, "15550100000", 100)
	sendCode(t, m, "15550100001", 200)
	count := func() (n int) {
		_ = m.View(func(tx storage.Reader) error {
			return tx.Iterate(key("login", ""), nil, false, func(_, _ []byte) (bool, error) { n++; return true, nil })
		})
		return n
	}
	if n := count(); n != 2 {
		t.Fatalf("%d records", n)
	}
	// The first record's window closes at 100+SendCodeWindow.
	sendCode(t, m, "15550100002", 100+SendCodeWindow)
	if n := count(); n != 2 {
		t.Fatalf("after first expiry: %d records, want 2", n)
	}
	sendCode(t, m, "15550100003", 10*SendCodeWindow)
	if n := count(); n != 1 {
		t.Fatalf("after all expired: %d records, want 1", n)
	}
}

func TestLogOutAndResetAuthorizations(t *testing.T) {
	m, _ := openMachine(t, nil)
	ctx := context.Background()
	u := signUp(t, m, "9996612345", "Ann", 1, 100)
	for perm := int64(2); perm <= 4; perm++ {
		sent := sendCode(t, m, u.Phone, 100+perm)
		apply[*SignInResult](t, m, SignIn{Phone: u.Phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: perm}, envAt(100, byte(perm*40)))
	}
	var auth3 *Authorization
	_ = m.View(func(tx storage.Reader) error {
		auth3, _, _ = GetAuthorization(tx, 3)
		return nil
	})
	// Device 1 ends device 3 by its hash; the current one cannot be named.
	if _, err := m.Apply(ctx, ResetAuthorization{UserID: u.ID, Hash: 12345, Current: 1}, envAt(200, 0)); rpcType(err) != "HASH_INVALID" {
		t.Fatalf("unknown hash: %v", err)
	}
	if _, err := m.Apply(ctx, ResetAuthorization{UserID: u.ID, Hash: auth3.Hash, Current: 3}, envAt(200, 0)); rpcType(err) != "HASH_INVALID" {
		t.Fatalf("own hash: %v", err)
	}
	if p := apply[int64](t, m, ResetAuthorization{UserID: u.ID, Hash: auth3.Hash, Current: 1}, envAt(200, 0)); p != 3 {
		t.Fatalf("reset %d", p)
	}
	if ok := apply[bool](t, m, LogOut{PermKeyID: 4}, envAt(201, 0)); !ok {
		t.Fatal("log out")
	}
	if ok := apply[bool](t, m, LogOut{PermKeyID: 4}, envAt(201, 0)); ok {
		t.Fatal("second log out")
	}
	if out := apply[[]int64](t, m, ResetAuthorizations{UserID: u.ID, Keep: 1}, envAt(202, 0)); len(out) != 1 || out[0] != 2 {
		t.Fatalf("reset all: %v", out)
	}
	_ = m.View(func(tx storage.Reader) error {
		perms, _ := UserAuthorizations(tx, u.ID)
		if len(perms) != 1 || perms[0] != 1 {
			t.Errorf("left %v", perms)
		}
		for _, p := range []int64{2, 3, 4} {
			if _, ok, _ := GetAuthorization(tx, p); ok {
				t.Errorf("key %d still signed in", p)
			}
		}
		return nil
	})
}
