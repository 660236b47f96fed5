// Package cli is "mtnode client": a small command-line Telegram client built
// on gotd/td, for trying a node without writing code. It signs in with a
// phone number, sends to a phone or @username, prints a chat's history and
// prints live messages.
//
// Each invocation is one short gotd session. The auth key lives in a session
// file (gotd's session.FileStorage format, mode 0600) so the next invocation
// resumes it; nothing else is kept between runs. Names and access hashes are
// fetched from the node when needed, as an app on a fresh device would.
//
// The package prints results to stdout and progress and prompts to stderr,
// so scripts can read stdout alone. It never prints key material.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gotd/td/session"
	"github.com/gotd/td/telegram"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// DefaultSession is where a client keeps its session when --session is not
// given: beside ./mtnode-data, the node's default data directory, because a
// session is only good for the node whose keys made it.
const DefaultSession = "mtnode-client.json"

// Usage is the client's help text.
const Usage = `mtnode client: a small command-line client for an mtnode node.

Usage:
  mtnode client [flags] login --phone PHONE [--code CODE] [--first NAME --last NAME]
  mtnode client [flags] send PEER TEXT... [--name NAME]
  mtnode client [flags] history PEER [--limit N] [--name NAME]
  mtnode client [flags] listen
  mtnode client [flags] logout

PEER is an @username or a phone number. A number that is neither a contact
nor in a chat is added to your contacts, under --name (default: the number),
which is how Telegram finds a user by phone. login asks for the code on stdin
unless --code is given, and signs up a new account (asking for the names
unless --first is given). On a node with test numbers (the default on
loopback), 99966XYYYY signs in with the digit X repeated, e.g. 9996610001
with code 11111. listen prints messages as they arrive until interrupted;
messages sent with the same session file show up with the next update, as
the node does not push a device what it sent itself.

Flags (before or after the command's arguments):
  --addr HOST:PORT     node's MTProto address (default 127.0.0.1:4430)
  --pubkey FILE        node's server.pub (default ./mtnode-data/server.pub)
  --dc N               node's data center (default 1)
  --session FILE       session file, one per account (default ./mtnode-client.json)
  --transport NAME     abridged, intermediate (default), padded_intermediate,
                       full, obfuscated2 or websocket
  --ws-url URL         WebSocket endpoint for --transport websocket
                       (default ws://127.0.0.1:8080/apiws)
  --timeout D          limit for login, send, history and logout (default 30s)
`

// IO is where the client reads and writes; the command wires the process's
// standard streams, tests wire buffers.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// options are the connection flags every subcommand shares.
type options struct {
	Addr      string
	PubKey    string
	DC        int
	Session   string
	Transport string
	WSURL     string
	Timeout   time.Duration
}

func defaultOptions() options {
	return options{
		Addr:      "127.0.0.1:4430",
		PubKey:    filepath.Join("mtnode-data", "server.pub"),
		DC:        1,
		Session:   DefaultSession,
		Transport: string(mtclient.Intermediate),
		WSURL:     "ws://127.0.0.1:8080/apiws",
		Timeout:   30 * time.Second,
	}
}

// register adds the shared flags to fs, bound to o.
func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", o.Addr, "node's MTProto address")
	fs.StringVar(&o.PubKey, "pubkey", o.PubKey, "node's server.pub")
	fs.IntVar(&o.DC, "dc", o.DC, "node's data center")
	fs.StringVar(&o.Session, "session", o.Session, "session file")
	fs.StringVar(&o.Transport, "transport", o.Transport, "MTProto transport")
	fs.StringVar(&o.WSURL, "ws-url", o.WSURL, "WebSocket endpoint")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "limit for one-shot commands")
}

// errUsage means the arguments were wrong; the message was printed.
var errUsage = errors.New("usage")

// Main runs "mtnode client" with args (after "client") and returns the exit
// code: 0 on success, 1 when the command failed, 2 on bad usage. ctx ends
// listen (the command cancels it on SIGINT).
func Main(ctx context.Context, args []string, stdio IO) int {
	err := run(ctx, args, stdio)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintln(stdio.Stderr, "mtnode client:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdio IO) error {
	opts := defaultOptions()
	global := flag.NewFlagSet("mtnode client", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	opts.register(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdio.Stdout, Usage)
			return err
		}
		return usageError(stdio, err.Error())
	}
	if global.NArg() == 0 {
		return usageError(stdio, "no command")
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	switch cmd {
	case "login":
		return runLogin(ctx, opts, rest, stdio)
	case "send":
		return runSend(ctx, opts, rest, stdio)
	case "history":
		return runHistory(ctx, opts, rest, stdio)
	case "listen":
		return runListen(ctx, opts, rest, stdio)
	case "logout":
		return runLogout(ctx, opts, rest, stdio)
	case "help":
		fmt.Fprint(stdio.Stdout, Usage)
		return nil
	default:
		return usageError(stdio, fmt.Sprintf("unknown command %q", cmd))
	}
}

// usageError prints msg and the usage to stderr.
func usageError(stdio IO, msg string) error {
	fmt.Fprintf(stdio.Stderr, "mtnode client: %s\n\n%s", msg, Usage)
	return errUsage
}

// parseArgs parses a subcommand's flags, which may come before, between or
// after its positional arguments ("--" ends the flags), and returns the
// positional arguments. The shared flags are accepted too.
func parseArgs(stdio IO, name string, opts *options, args []string, extra func(fs *flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet("mtnode client "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts.register(fs)
	if extra != nil {
		extra(fs)
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdio.Stdout, Usage)
				return nil, err
			}
			return nil, usageError(stdio, fmt.Sprintf("%s: %v", name, err))
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// errNotSignedIn is returned by commands that need an account when the
// session has none.
var errNotSignedIn = errors.New("not signed in: run mtnode client login first")

// sessionExists reports whether the session file exists, so commands that
// need an account fail at once instead of making a key for nobody.
func (o options) sessionExists() error {
	if _, err := os.Stat(o.Session); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no session file %s: %w", o.Session, errNotSignedIn)
		}
		return fmt.Errorf("session file: %w", err)
	}
	return nil
}

// newClient builds the gotd client the flags describe, with the session in
// the session file and, for listen, h receiving updates and onState told
// of the connection's state; both are nil for one-shot commands.
func (o options) newClient(h telegram.UpdateHandler, onState func(telegram.ConnectionState)) (*telegram.Client, error) {
	if _, err := os.Stat(o.PubKey); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("public key %s not found: start the node (mtnode run) in this directory or pass --pubkey", o.PubKey)
		}
		return nil, fmt.Errorf("public key: %w", err)
	}
	if dir := filepath.Dir(o.Session); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("session directory: %w", err)
		}
	}
	tr := mtclient.Transport(o.Transport)
	known := false
	for _, t := range mtclient.Transports {
		known = known || t == tr
	}
	if !known {
		return nil, fmt.Errorf("unknown transport %q", o.Transport)
	}
	return mtclient.New(mtclient.Options{
		Addr:          o.Addr,
		WSURL:         o.WSURL,
		DC:            o.DC,
		PublicKeyFile: o.PubKey,
		Transport:     tr,
		Telegram: telegram.Options{
			SessionStorage:    &session.FileStorage{Path: o.Session},
			UpdateHandler:     h,
			NoUpdates:         h == nil,
			OnConnectionState: onState,
		},
	})
}

// runSession runs f in one client session. A one-shot command is bounded by
// the timeout; listen passes timeout 0 and runs until ctx ends. If the node
// never answered, the error says where the client was looking.
func (o options) runSession(ctx context.Context, c *telegram.Client, timeout time.Duration, f func(ctx context.Context) error) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	connected := false
	err := c.Run(ctx, func(ctx context.Context) error {
		connected = true
		return f(ctx)
	})
	if err != nil && !connected && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no answer from %s within %v: is mtnode run serving there?", o.Addr, timeout)
		}
	}
	return cleanError(err)
}

// cleanError drops gotd's internal wrapping ("callback: ",
// "rpcDoRequest: "), which says nothing to a user.
func cleanError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, errNotSignedIn) {
		return errNotSignedIn
	}
	msg := strings.TrimPrefix(err.Error(), "callback: ")
	return errors.New(strings.ReplaceAll(msg, "rpcDoRequest: ", ""))
}
