package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/updates"
	"github.com/gotd/td/tg"
)

func runListen(ctx context.Context, opts options, args []string, stdio IO) error {
	pos, err := parseArgs(stdio, "listen", &opts, args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError(stdio, fmt.Sprintf("listen: unexpected arguments %q", pos))
	}
	if err := opts.sessionExists(); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := &listener{out: stdio}
	d := tg.NewUpdateDispatcher()
	d.OnNewMessage(l.onNewMessage)
	// gotd's gap manager orders updates by pts and fills any gap (a push
	// lost while reconnecting, say) with updates.getDifference.
	gaps := updates.New(updates.Config{Handler: d})
	// gotd does not ask for the difference when it reconnects, and pushes
	// sent while it was away are lost; like an app, listen then tells the
	// manager updatesTooLong, which makes it call getDifference.
	var readies atomic.Int32
	var lost atomic.Bool
	onState := func(s telegram.ConnectionState) {
		switch s {
		case telegram.ConnectionStateDisconnected:
			// Said once, not on every failed dial.
			if !lost.Swap(true) && ctx.Err() == nil {
				fmt.Fprintln(stdio.Stderr, "connection lost; reconnecting")
			}
		case telegram.ConnectionStateReady:
			lost.Store(false)
			if readies.Add(1) > 1 {
				fmt.Fprintln(stdio.Stderr, "reconnected; catching up")
				go func() { _ = gaps.Handle(ctx, &tg.UpdatesTooLong{}) }()
			}
		}
	}
	c, err := opts.newClient(gaps, onState)
	if err != nil {
		return err
	}
	// The connection is brought up within the timeout; after that, listen
	// runs until ctx ends.
	err = opts.runSession(ctx, c, 0, func(ctx context.Context) error {
		up, cancel := context.WithTimeout(ctx, opts.Timeout)
		self, err := requireSignedIn(up, c)
		cancel()
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.api, l.selfID, l.names = c.API(), self.ID, newNames(self)
		l.mu.Unlock()
		return gaps.Run(ctx, c.API(), self.ID, updates.AuthOptions{
			// Start from the node's present state: listen prints what
			// arrives from now on; history shows the past.
			Forget: true,
			OnStart: func(context.Context) {
				fmt.Fprintf(stdio.Stderr, "listening as %s; Ctrl-C to stop\n", describe(self))
			},
		})
	})
	if errors.Is(err, context.Canceled) || (err == nil && ctx.Err() != nil) {
		return nil
	}
	return err
}

// listener prints new messages.
type listener struct {
	out IO

	mu     sync.Mutex
	api    *tg.Client
	selfID int64
	names  names
	// refreshed notes senders already looked up, so an unknown one costs
	// one messages.getDialogs at most.
	refreshed map[int64]bool
}

func (l *listener) onNewMessage(ctx context.Context, e tg.Entities, u *tg.UpdateNewMessage) error {
	m, ok := u.Message.(*tg.Message)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, user := range e.Users {
		l.names.add(user)
	}
	if from := senderID(l.selfID, m); from != 0 {
		if _, known := l.names[from]; !known {
			l.lookup(ctx, from)
		}
	}
	printMessage(l.out.Stdout, l.names, l.selfID, m)
	return nil
}

// lookup learns the name of a sender that arrived without one (a short
// update carries only an id) from the dialog list, where the new chat is.
func (l *listener) lookup(ctx context.Context, id int64) {
	if l.refreshed[id] {
		return
	}
	if l.refreshed == nil {
		l.refreshed = map[int64]bool{}
	}
	l.refreshed[id] = true
	res, err := l.api.MessagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{
		OffsetPeer: &tg.InputPeerEmpty{},
		Limit:      50,
	})
	if err != nil {
		return
	}
	if m, ok := res.AsModified(); ok {
		l.names.addAll(m.GetUsers())
	}
}
