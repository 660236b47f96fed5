package node

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/gotd/td/bin"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// renderer turns committed events into the TL a session is pushed; the
// api package owns the forms Telegram uses (short updates, users).
type renderer interface {
	RenderEvent(ev messaging.Event) (bin.Encoder, error)
	// RenderEvents renders events of one user, each with a pts, as one
	// container.
	RenderEvents(evs []messaging.Event) (bin.Encoder, error)
}

// maxPushBatch bounds the events pushed in one container.
const maxPushBatch = 100

// notifier pushes committed messaging events to the live sessions of each
// user's authorizations, except the one (ExceptAuth) whose RPC answer
// already carries the update. Pushes are best effort: pts in the update
// log is the truth and clients fill gaps with updates.getDifference.
type notifier struct {
	srv    atomic.Pointer[protocol.Server]
	view   atomic.Value // viewer: the state events are rendered from
	render atomic.Value // renderer
	// push delivers a rendered update to the live sessions of perms: on
	// this node only (standalone), or on every node of the DC (the
	// cluster's push bus).
	push func(perms []int64, msg bin.Encoder)
	log  *slog.Logger
}

// viewer reads the messaging state.
type viewer interface {
	View(ctx context.Context, fn func(tx storage.Reader) error) error
}

// Notify implements messaging.Notifier.
func (n *notifier) Notify(events []messaging.Event) {
	m, _ := n.view.Load().(viewer)
	r, _ := n.render.Load().(renderer)
	if m == nil || r == nil || n.push == nil {
		return
	}
	for len(events) > 0 {
		// A run of one user's events with pts (and the same session to
		// skip) goes as one push.
		ev, k := events[0], 1
		for ev.Pts != 0 && k < len(events) && k < maxPushBatch {
			next := events[k]
			if next.UserID != ev.UserID || next.ExceptAuth != ev.ExceptAuth || next.Pts == 0 {
				break
			}
			k++
		}
		run := events[:k]
		events = events[k:]
		var perms []int64
		if err := m.View(context.Background(), func(tx storage.Reader) error {
			var err error
			perms, err = messaging.UserDevices(tx, ev.UserID)
			return err
		}); err != nil {
			n.log.Error("list authorizations", "err", err)
			continue
		}
		if len(perms) == 0 || (len(perms) == 1 && perms[0] == ev.ExceptAuth) {
			continue
		}
		msg, err := r.RenderEvents(run)
		if err != nil {
			n.log.Error("render event", "user", ev.UserID, "pts", ev.Pts, "events", len(run), "err", err)
			continue
		}
		to := perms[:0:0]
		for _, perm := range perms {
			if perm != ev.ExceptAuth {
				to = append(to, perm)
			}
		}
		n.push(to, msg)
	}
}

// asyncNotifier hands events to a notifier on a goroutine of its own, in
// order, so raft's FSM goroutine, which commits them, is not held up by
// rendering and pushing. The queue is bounded; when it is full, events are
// dropped (pushes are best effort; pts and getDifference are the truth).
type asyncNotifier struct {
	ch      chan []messaging.Event
	next    messaging.Notifier
	dropped func()
}

func newAsyncNotifier(next messaging.Notifier, dropped func()) *asyncNotifier {
	return &asyncNotifier{ch: make(chan []messaging.Event, 4096), next: next, dropped: dropped}
}

// Notify implements messaging.Notifier.
func (a *asyncNotifier) Notify(events []messaging.Event) {
	select {
	case a.ch <- events:
	default:
		a.dropped()
	}
}

// run delivers queued events until ctx ends.
func (a *asyncNotifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-a.ch:
			a.next.Notify(ev)
		}
	}
}
