// Package messaging is the domain state machine: users, authorizations,
// contacts, per-user message boxes, dialogs and the per-user update log
// (pts). It does no networking and reads no clock or randomness of its own:
// every command carries its time and random bytes (Env), so applying the
// same commands in the same order gives the same state on every replica.
// The cluster issue puts Apply behind Raft; nothing above it changes.
package messaging

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mtnode/mtnode/storage"
)

// Env is everything outside the state a command may depend on. It is fixed
// when the command is proposed, never read during apply.
type Env struct {
	// Now is the command's time, unix seconds.
	Now int64
	// Rand is random bytes chosen by the proposer (login codes, hashes).
	Rand [32]byte
}

// Command is one deterministic state change. apply must depend only on the
// transaction's contents and env.
type Command interface {
	// Kind names the command for logs, metrics and (later) its log encoding.
	Kind() string
	apply(tx *storage.Txn, env Env) (any, error)
}

// Event is an update for one user produced by a command, already recorded
// in that user's update log when Pts > 0. The notifier pushes events to the
// user's live sessions after the command commits.
type Event struct {
	UserID int64
	// Pts and PtsCount position a pts-carrying update in the user's log;
	// zero for ephemeral events (typing).
	Pts, PtsCount int
	// Update is the TL update, encoded.
	Update []byte
	// ExceptAuth, if set, is a perm auth key id that must not get the
	// push: the sending device learns the result from its own RPC answer.
	ExceptAuth int64
}

// Applied is what a committed command returns: its result and the events
// to push.
type Applied struct {
	Result any
	Events []Event
}

// Notifier receives events after their command committed.
type Notifier interface {
	Notify(events []Event)
}

// Machine applies commands to the node's state. On one node commands are
// serialised by a mutex and each commits in one durable transaction; the
// replicated version proposes them to Raft instead.
type Machine struct {
	table    *storage.Table
	notifier Notifier

	mu       sync.Mutex // serialises commands
	notifyMu sync.Mutex // orders notifications as commands committed
}

// NewMachine returns a Machine over the table that holds messaging state.
func NewMachine(table *storage.Table, n Notifier) *Machine {
	return &Machine{table: table, notifier: n}
}

// ErrRejected wraps domain errors: the command was valid to send but the
// state says no (for example PHONE_CODE_INVALID). Nothing was written.
var ErrRejected = errors.New("rejected")

// Apply runs cmd in one transaction; on success the write is on disk and
// its events have been handed to the notifier.
func (m *Machine) Apply(ctx context.Context, cmd Command, env Env) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	var out any
	var events []Event
	err := m.table.Update(func(tx *storage.Txn) error {
		res, err := cmd.apply(tx, env)
		if err != nil {
			return err
		}
		if a, ok := res.(Applied); ok {
			out, events = a.Result, a.Events
		} else {
			out = res
		}
		return nil
	})
	// Hand over to the notify lock before releasing the write lock: events
	// reach the notifier in commit order (so pushes go out in pts order),
	// while the next command may already commit.
	m.notifyMu.Lock()
	m.mu.Unlock()
	if err == nil && len(events) > 0 && m.notifier != nil {
		m.notifier.Notify(events)
	}
	m.notifyMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.Kind(), err)
	}
	return out, nil
}

// View runs a read-only query against a consistent snapshot.
func (m *Machine) View(fn func(tx *storage.Txn) error) error {
	return m.table.View(fn)
}

// Publish hands ephemeral events (typing) straight to the notifier. They
// change no state and are never stored, so they take no transaction and,
// in a cluster, no log entry.
func (m *Machine) Publish(events []Event) {
	if len(events) > 0 && m.notifier != nil {
		m.notifyMu.Lock()
		defer m.notifyMu.Unlock()
		m.notifier.Notify(events)
	}
}
