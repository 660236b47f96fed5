package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/internal/mtclient"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/node"
)

// testNode runs a node on loopback with ephemeral ports; edit may change
// its config. The node's log goes to logs (and stderr with -v).
func testNode(t *testing.T, edit func(*config.Config)) (n *node.Node, logs *syncBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.HTTPAddr = ""
	cfg.Log.Level = "debug"
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs = &syncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	n, err := node.New(&cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node run: %v", err)
		}
	})
	return n, logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peer is a connected gotd client kept running for the whole test: the
// key exchange is the expensive part, so tests reuse peers.
type peer struct {
	c       *telegram.Client
	api     *tg.Client
	updates chan tg.UpdatesClass
	self    *tg.User
}

// connect starts gotd clients against n, one per device name, and waits
// until all are connected. They connect in parallel: the key exchange is
// the slow part.
func connect(t *testing.T, n *node.Node, devices ...string) []*peer {
	t.Helper()
	peers := make([]*peer, len(devices))
	readies := make([]chan error, len(devices))
	for i, device := range devices {
		p, ready, stop, err := startPeer(n, device)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		peers[i], readies[i] = p, ready
	}
	timeout := time.After(60 * time.Second)
	for i, ready := range readies {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatalf("client %s: %v", devices[i], err)
			}
		case <-timeout:
			t.Fatalf("client %s did not connect", devices[i])
		}
	}
	return peers
}

// startPeer runs a client until stop; ready gets nil once it is connected,
// or the error it stopped with.
func startPeer(n *node.Node, device string) (p *peer, ready chan error, stop func(), err error) {
	p = &peer{updates: make(chan tg.UpdatesClass, 16)}
	c, err := mtclient.New(mtclient.Options{
		Addr:          n.ClientAddr().String(),
		PublicKeyFile: n.PublicKeyPath(),
		Telegram: telegram.Options{
			Device: telegram.DeviceConfig{DeviceModel: device, SystemVersion: "test", AppVersion: "1.0"},
			UpdateHandler: telegram.UpdateHandlerFunc(func(ctx context.Context, u tg.UpdatesClass) error {
				select {
				case p.updates <- u:
				default:
				}
				return nil
			}),
		},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	p.c, p.api = c, c.API()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan error, 2), make(chan struct{})
	go func() {
		defer close(done)
		err := c.Run(ctx, func(ctx context.Context) error {
			ready <- nil
			<-ctx.Done()
			return nil
		})
		if err == nil {
			err = errors.New("client stopped")
		}
		ready <- err
	}()
	return p, ready, func() { cancel(); <-done }, nil
}

// login runs gotd's own auth flow for a test number: sign-up when the
// number is new, sign-in otherwise.
func (p *peer) login(t *testing.T, ua auth.UserAuthenticator) {
	t.Helper()
	ctx := testCtx(t)
	if err := auth.NewFlow(ua, auth.SendCodeOptions{}).Run(ctx, p.c.Auth()); err != nil {
		t.Fatalf("auth flow: %v", err)
	}
	self, err := p.c.Self(ctx)
	if err != nil {
		t.Fatalf("self: %v", err)
	}
	p.self = self
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantRPC fails unless err is the Telegram error msg (e.g. "FLOOD_WAIT"
// matches its type, "FLOOD_WAIT_30" the whole message).
func wantRPC(t *testing.T, what string, err error, code int, msg string) *tgerr.Error {
	t.Helper()
	var te *tgerr.Error
	if !errors.As(err, &te) || te.Code != code || (te.Message != msg && te.Type != msg) {
		t.Fatalf("%s: got %v, want %d %s", what, err, code, msg)
	}
	return te
}

// TestAccountsEndToEnd drives the account API with gotd clients on one
// node (clients are reused: their key exchange is the expensive part).
// Users A (two devices), B and C sign up through gotd's auth flow; the
// bad-code paths and the sendCode flood limit answer as Telegram does;
// contacts, access hashes, usernames and the block list work across users
// (testContacts); and sessions end by reset and log out.
func TestAccountsEndToEnd(t *testing.T) {
	n, logs := testNode(t, nil)
	peers := connect(t, n, "A1", "A2", "B", "C")
	a1, a2, b, c := peers[0], peers[1], peers[2], peers[3]
	ctx := testCtx(t)

	// A call needing a user on a fresh key.
	_, err := c.api.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
	wantRPC(t, "unauthorized call", err, 401, "AUTH_KEY_UNREGISTERED")

	// Two users sign up with gotd's test authenticator (99966 1 YYYY,
	// code 1 repeated). Seeds are fixed so the phones differ.
	a1.login(t, auth.Test(mrand.New(mrand.NewSource(1)), 1))
	b.login(t, auth.Test(mrand.New(mrand.NewSource(2)), 1))
	if a1.self.Phone == b.self.Phone || a1.self.ID == b.self.ID {
		t.Fatalf("same user twice: %+v %+v", a1.self, b.self)
	}
	if a1.self.FirstName != "Test" || a1.self.LastName != "User" || !a1.self.Self || messaging.HomeDC(a1.self.ID) != 1 {
		t.Fatalf("signed up as %+v", a1.self)
	}
	// The same phone on a second device signs in to the same user.
	a2.login(t, auth.TestUser(a1.self.Phone, 1))
	if a2.self.ID != a1.self.ID {
		t.Fatalf("second device is user %d, want %d", a2.self.ID, a1.self.ID)
	}
	if strings.Contains(logs.String(), "11111") {
		t.Error("a test code reached the log")
	}

	t.Run("bad input", func(t *testing.T) {
		ctx := testCtx(t)
		_, err := c.api.AuthSendCode(ctx, &tg.AuthSendCodeRequest{PhoneNumber: "12ab34", Settings: tg.CodeSettings{}})
		wantRPC(t, "bad phone", err, 400, "PHONE_NUMBER_INVALID")
		_, err = c.api.AuthSignIn(ctx, &tg.AuthSignInRequest{PhoneNumber: "9996617000", PhoneCode: "11111"})
		wantRPC(t, "no hash", err, 400, "PHONE_CODE_HASH_EMPTY")
		_, err = c.api.AuthSignIn(ctx, &tg.AuthSignInRequest{PhoneNumber: "9996617000", PhoneCodeHash: "h"})
		wantRPC(t, "no code", err, 400, "PHONE_CODE_EMPTY")
		_, err = c.api.AuthSignIn(ctx, &tg.AuthSignInRequest{PhoneNumber: "9996617000", PhoneCodeHash: "h", PhoneCode: "11111"})
		wantRPC(t, "unknown hash", err, 400, "PHONE_CODE_EXPIRED")
		_, err = c.api.AuthSignUp(ctx, &tg.AuthSignUpRequest{PhoneNumber: "9996617000", PhoneCodeHash: "h", FirstName: " "})
		wantRPC(t, "blank name", err, 400, "FIRSTNAME_INVALID")
		// B's phone is taken.
		sent := sendCode(t, c, b.self.Phone)
		_, err = c.api.AuthSignUp(ctx, &tg.AuthSignUpRequest{PhoneNumber: b.self.Phone, PhoneCodeHash: sent.PhoneCodeHash, FirstName: "X"})
		wantRPC(t, "taken phone", err, 400, "PHONE_NUMBER_OCCUPIED")
	})

	t.Run("wrong code attempts", func(t *testing.T) {
		ctx := testCtx(t)
		const phone = "9996617001"
		sent := sendCode(t, c, phone)
		for i := 1; i <= messaging.CodeAttemptsMax; i++ {
			_, err := c.api.AuthSignIn(ctx, &tg.AuthSignInRequest{PhoneNumber: phone, PhoneCodeHash: sent.PhoneCodeHash, PhoneCode: "22222"})
			wantRPC(t, "wrong code", err, 400, "PHONE_CODE_INVALID")
		}
		// The code is dead now, even when right.
		_, err := c.api.AuthSignIn(ctx, &tg.AuthSignInRequest{PhoneNumber: phone, PhoneCodeHash: sent.PhoneCodeHash, PhoneCode: "11111"})
		wantRPC(t, "after the limit", err, 400, "PHONE_CODE_EXPIRED")
	})

	t.Run("sendCode flood", func(t *testing.T) {
		ctx := testCtx(t)
		const phone = "+999 661 7002"
		for i := 0; i < messaging.SendCodeLimit; i++ {
			sendCode(t, c, phone)
		}
		_, err := c.api.AuthSendCode(ctx, &tg.AuthSendCodeRequest{PhoneNumber: phone, Settings: tg.CodeSettings{}})
		te := wantRPC(t, "flood", err, 420, "FLOOD_WAIT")
		if te.Argument <= 0 || te.Argument > messaging.SendCodeWindow {
			t.Fatalf("flood wait %d s", te.Argument)
		}
	})

	// C, so far only a key, signs up too; the three users meet.
	c.login(t, auth.TestUser("9996610103", 1))
	if c.self.ID == a1.self.ID || c.self.ID == b.self.ID {
		t.Fatalf("C signed in as an existing user: %+v", c.self)
	}
	t.Run("contacts", func(t *testing.T) { testContacts(t, a1, a2, b, c) })

	t.Run("authorizations", func(t *testing.T) {
		ctx := testCtx(t)
		list, err := a1.api.AccountGetAuthorizations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Authorizations) != 2 {
			t.Fatalf("authorizations: %+v", list.Authorizations)
		}
		cur, other := list.Authorizations[0], list.Authorizations[1]
		if !cur.Current || cur.Hash != 0 || other.Current || other.Hash == 0 || cur.DeviceModel != "A1" || other.DeviceModel != "A2" || other.AppVersion != "1.0" || other.DateCreated == 0 {
			t.Fatalf("authorizations: %+v", list.Authorizations)
		}
		_, err = a1.api.AccountResetAuthorization(ctx, other.Hash+1)
		wantRPC(t, "unknown hash", err, 400, "HASH_INVALID")
		_, err = a1.api.AccountResetAuthorization(ctx, 0)
		wantRPC(t, "current session", err, 400, "HASH_INVALID")
		if ok, err := a1.api.AccountResetAuthorization(ctx, other.Hash); err != nil || !ok {
			t.Fatalf("reset: %v, %v", ok, err)
		}
		// The other device is signed out: its next call is refused.
		_, err = a2.api.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
		wantRPC(t, "logged out device", err, 401, "AUTH_KEY_UNREGISTERED")
		if _, err := a1.c.Self(ctx); err != nil {
			t.Fatalf("resetting device: %v", err)
		}
		// It signs in again, and the user logs every other device out.
		a2.login(t, auth.TestUser(a1.self.Phone, 1))
		if ok, err := a2.api.AuthResetAuthorizations(ctx); err != nil || !ok {
			t.Fatalf("reset all: %v %v", ok, err)
		}
		_, err = a1.api.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
		wantRPC(t, "after reset all", err, 401, "AUTH_KEY_UNREGISTERED")
		if list, err := a2.api.AccountGetAuthorizations(ctx); err != nil || len(list.Authorizations) != 1 {
			t.Fatalf("left: %+v, %v", list, err)
		}
	})

	t.Run("log out", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := b.api.AuthLogOut(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := b.api.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
		wantRPC(t, "after log out", err, 401, "AUTH_KEY_UNREGISTERED")
		_, err = b.api.AuthLogOut(ctx)
		wantRPC(t, "second log out", err, 401, "AUTH_KEY_UNREGISTERED")
	})
}

func sendCode(t *testing.T, p *peer, phone string) *tg.AuthSentCode {
	t.Helper()
	res, err := p.api.AuthSendCode(testCtx(t), &tg.AuthSendCodeRequest{PhoneNumber: phone, Settings: tg.CodeSettings{}})
	if err != nil {
		t.Fatalf("send code: %v", err)
	}
	sent, ok := res.(*tg.AuthSentCode)
	if !ok {
		t.Fatalf("sent code %T", res)
	}
	if typ, ok := sent.Type.(*tg.AuthSentCodeTypeSMS); !ok || typ.Length != 5 || sent.PhoneCodeHash == "" {
		t.Fatalf("sent code %+v", sent)
	}
	return sent
}

// TestWebhookDeliversRandomCodes signs up a real (non-test) number whose
// code only the operator's webhook learns, and checks the code never
// reaches the node's log.
func TestWebhookDeliversRandomCodes(t *testing.T) {
	type delivery struct{ Phone, Code string }
	got := make(chan delivery, 4)
	var down atomic.Bool
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var d delivery
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&d) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got <- d
	}))
	defer hook.Close()
	n, logs := testNode(t, func(c *config.Config) {
		c.Auth.CodeSender = "webhook"
		c.Auth.WebhookURL = hook.URL
		c.Auth.CodeLength = 8
		c.Auth.TestNumbers = "off"
	})
	p := connect(t, n, "W")[0]
	var code string
	p.login(t, signUpAuth{phone: "+1 555 010 0000", code: func(ctx context.Context, sent *tg.AuthSentCode) (string, error) {
		if typ, ok := sent.Type.(*tg.AuthSentCodeTypeSMS); !ok || typ.Length != 8 {
			t.Errorf("sent code type %+v", sent.Type)
		}
		select {
		case d := <-got:
			if d.Phone != "15550100000" || len(d.Code) != 8 {
				t.Errorf("delivery %+v", d)
			}
			code = d.Code
			return d.Code, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}})
	if p.self.Phone != "15550100000" {
		t.Fatalf("self %+v", p.self)
	}
	if strings.Contains(logs.String(), code) {
		t.Fatal("the login code reached the log")
	}

	// A gateway that fails makes sendCode fail, not hang.
	down.Store(true)
	_, err := p.api.AuthSendCode(testCtx(t), &tg.AuthSendCodeRequest{PhoneNumber: "15550100001", Settings: tg.CodeSettings{}})
	wantRPC(t, "failed delivery", err, 400, "SMS_CODE_CREATE_FAILED")
}

// signUpAuth is a gotd authenticator for any phone that signs up as
// "Web Hook" when the number is new.
type signUpAuth struct {
	phone string
	code  auth.CodeAuthenticatorFunc
}

func (a signUpAuth) Phone(context.Context) (string, error)    { return a.phone, nil }
func (a signUpAuth) Password(context.Context) (string, error) { return "", auth.ErrPasswordNotProvided }
func (a signUpAuth) AcceptTermsOfService(context.Context, tg.HelpTermsOfService) error {
	return nil
}
func (a signUpAuth) SignUp(context.Context) (auth.UserInfo, error) {
	return auth.UserInfo{FirstName: "Web", LastName: "Hook"}, nil
}
func (a signUpAuth) Code(ctx context.Context, sent *tg.AuthSentCode) (string, error) {
	return a.code(ctx, sent)
}
