// Package api implements the Telegram API methods on top of the protocol:
// it decodes each call with gotd/td's typed dispatcher, checks it and
// answers it. One file per Telegram namespace.
package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// Options configure the API.
type Options struct {
	// DC is this node's data center.
	DC int
	// PublicAddr returns the IP and port clients should connect to. It is a
	// function because the listener may pick its port at start.
	PublicAddr func() (ip string, port int)
	// Logger receives the API's logs.
	Logger *slog.Logger
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
	// Rand is the randomness commands are given; defaults to crypto/rand.
	Rand io.Reader
	// Machine holds the messaging state: a *messaging.Machine on a
	// standalone node, the replicated state on a clustered one.
	Machine State
	// Access derives and checks access hashes.
	Access messaging.AccessHashes
	// TestNumbers lets 99966XYYYY numbers sign in with code X repeated.
	TestNumbers bool
	// Codes delivers login codes.
	Codes CodeSender
	// CodeLength is the digits of a login code (default 5).
	CodeLength int
	// CodeTTL is how long a login code works (default 5 minutes).
	CodeTTL time.Duration
	// DCOptions lists every DC's client addresses for help.getConfig; nil
	// lists this node's own address only.
	DCOptions func() []tg.DCOption
	// PhoneHome returns a normalized number's home DC; nil homes every
	// number in this DC.
	PhoneHome func(phone string) int
	// ClaimUsername takes a username for a user where a federation keeps
	// its usernames, releasing old; claimed false means that is this DC
	// and the local command does it. Nil: usernames are this DC's alone.
	ClaimUsername func(ctx context.Context, uid int64, old, name string) (claimed bool, err error)
	// KnownDC reports whether DC dc is in the federation; nil: no other
	// DC is (auth.exportAuthorization answers DC_ID_INVALID).
	KnownDC func(dc int) bool
	// ImportAuthorization takes an exported token at the user's home and
	// returns the user; nil: nothing can be imported.
	ImportAuthorization func(ctx context.Context, cmd messaging.ImportAuthorization) (*messaging.User, error)
}

// State is the messaging state the API reads and changes.
type State interface {
	// Apply runs a command; see messaging.Machine.Apply. An error wrapping
	// messaging.ErrUnavailable means no leader could take it: the outcome
	// is unknown and the caller may retry elsewhere.
	Apply(ctx context.Context, cmd messaging.Command, env messaging.Env) (any, error)
	// View reads a consistent snapshot.
	View(ctx context.Context, fn func(tx storage.Reader) error) error
	// Publish hands ephemeral events (typing) to the notifier.
	Publish(events []messaging.Event)
}

// CodeSender delivers a login code to a phone number. Implementations must
// not log the code outside the loopback "log" sender meant for development.
type CodeSender interface {
	SendCode(ctx context.Context, phone, code string) error
}

// Service answers API calls. It implements protocol.Handler.
type Service struct {
	opts Options
	log  *slog.Logger
	d    *tg.ServerDispatcher
	m    State
}

// New builds the Service and registers every method it serves.
func New(opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.CodeLength == 0 {
		opts.CodeLength = 5
	}
	if opts.CodeTTL == 0 {
		opts.CodeTTL = 5 * time.Minute
	}
	if opts.Codes == nil {
		opts.Codes = LogCodeSender(opts.Logger)
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "api"), m: opts.Machine}
	s.d = tg.NewServerDispatcher(s.unknownMethod)
	s.registerHelp()
	s.registerAuth()
	s.registerTransfer()
	s.registerAccount()
	s.registerUsers()
	s.registerContacts()
	s.registerMessages()
	s.registerUpdates()
	return s
}

// ctxKey carries the call into typed handlers, which the dispatcher only
// hands a context.
type ctxKey struct{}

// callFrom returns the protocol call a handler is serving.
func callFrom(ctx context.Context) *protocol.Call {
	c, _ := ctx.Value(ctxKey{}).(*protocol.Call)
	return c
}

// Handle implements protocol.Handler.
func (s *Service) Handle(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
	res, err := s.d.Handle(context.WithValue(ctx, ctxKey{}, call), call.Body)
	if err == nil {
		return res, nil
	}
	var te *tgerr.Error
	if errors.As(err, &te) || errors.Is(err, messaging.ErrUnavailable) {
		return nil, err
	}
	// Handlers report their own failures as *tgerr.Error (see internal);
	// anything else comes from decoding the request.
	return nil, fmt.Errorf("%w: %w", tgerr.New(400, "INPUT_REQUEST_INVALID"), err)
}

// unknownMethod answers a constructor no handler is registered for.
func (s *Service) unknownMethod(_ context.Context, b *bin.Buffer) (bin.Encoder, error) {
	id, _ := b.PeekID()
	if _, known := tg.TypesMap()[id]; known {
		// A method of the schema that this server does not serve (yet).
		return nil, tgerr.New(400, "METHOD_NOT_SUPPORTED")
	}
	return nil, tgerr.New(400, "INPUT_METHOD_INVALID")
}

// internal logs err and returns the INTERNAL error the client sees: the
// client learns nothing of our internals.
func (s *Service) internal(method string, err error) error {
	s.log.Error("method failed", "method", method, "err", err)
	return tgerr.New(500, "INTERNAL")
}

// Local is the State of a standalone node: one messaging.Machine, read
// in its own snapshot.
func Local(m *messaging.Machine) State { return localState{m} }

type localState struct{ *messaging.Machine }

func (l localState) View(_ context.Context, fn func(tx storage.Reader) error) error {
	return l.Machine.View(fn)
}
