package node

import (
	"log/slog"
	"sync/atomic"

	"github.com/gotd/td/bin"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// renderer turns a committed event into the TL a session is pushed; the
// api package owns the forms Telegram uses (short updates, users).
type renderer interface {
	RenderEvent(ev messaging.Event) (bin.Encoder, error)
}

// notifier pushes committed messaging events to the live sessions of each
// user's authorizations, except the one (ExceptAuth) whose RPC answer
// already carries the update. Pushes are best effort: pts in the update
// log is the truth and clients fill gaps with updates.getDifference.
type notifier struct {
	srv    atomic.Pointer[protocol.Server]
	m      atomic.Pointer[messaging.Machine]
	render atomic.Value // renderer
	log    *slog.Logger
}

// Notify implements messaging.Notifier.
func (n *notifier) Notify(events []messaging.Event) {
	srv, m := n.srv.Load(), n.m.Load()
	r, _ := n.render.Load().(renderer)
	if srv == nil || m == nil || r == nil {
		return
	}
	for _, ev := range events {
		var perms []int64
		if err := m.View(func(tx *storage.Txn) error {
			var err error
			perms, err = messaging.UserAuthorizations(tx, ev.UserID)
			return err
		}); err != nil {
			n.log.Error("list authorizations", "err", err)
			continue
		}
		if len(perms) == 0 || (len(perms) == 1 && perms[0] == ev.ExceptAuth) {
			continue
		}
		msg, err := r.RenderEvent(ev)
		if err != nil {
			n.log.Error("render event", "user", ev.UserID, "pts", ev.Pts, "err", err)
			continue
		}
		for _, perm := range perms {
			if perm != ev.ExceptAuth {
				srv.PushPerm(perm, msg)
			}
		}
	}
}
