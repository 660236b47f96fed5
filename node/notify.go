package node

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// notifier pushes committed messaging events to the live sessions of each
// user's authorizations. Pushes are best effort: pts in the update log is
// the truth and clients fill gaps with updates.getDifference.
type notifier struct {
	srv atomic.Pointer[protocol.Server]
	m   atomic.Pointer[messaging.Machine]
	log *slog.Logger
}

// Notify implements messaging.Notifier.
func (n *notifier) Notify(events []messaging.Event) {
	srv, m := n.srv.Load(), n.m.Load()
	if srv == nil || m == nil {
		return
	}
	for _, ev := range events {
		upd, err := tg.DecodeUpdate(&bin.Buffer{Buf: ev.Update})
		if err != nil {
			n.log.Error("decode event", "err", err)
			continue
		}
		var perms []int64
		if err := m.View(func(tx *storage.Txn) error {
			var err error
			perms, err = messaging.UserAuthorizations(tx, ev.UserID)
			return err
		}); err != nil {
			n.log.Error("list authorizations", "err", err)
			continue
		}
		msg := &tg.Updates{Updates: []tg.UpdateClass{upd}, Date: int(time.Now().Unix())}
		for _, perm := range perms {
			if perm != ev.ExceptAuth {
				srv.PushPerm(perm, msg)
			}
		}
	}
}
