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
	// layout is the applier's, not the proposer's: set by
	// Replicated.ApplyCommand (a Machine has the zero, one-group layout).
	// It is not encoded; every replica of a DC has the same.
	layout *Layout
	// notes collects what apply did that the applier acts on (nil on a
	// Machine, whose layout has no outbox).
	notes *applyNotes
}

// applyNotes is what a command's apply reports beside its result.
type applyNotes struct {
	outbox []OutboxMark // outbox entries appended, in order
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
	// Outbox lists the entries the command appended to its group's
	// outbox: destination group and seq.
	Outbox []OutboxMark
}

// Notifier receives events after their command committed.
type Notifier interface {
	Notify(events []Event)
}

// Machine applies commands to the node's state. Commands are applied one
// after another, in the order they arrive, but committed in groups: the
// caller that finds no commit running becomes the committer, applies every
// queued command in one Badger transaction and commits it with one fsync,
// then answers each caller. The order and outcome of every command is what
// applying them one transaction each would give (a rejected command's
// writes are dropped by redoing its batch without it), so the replicated
// version can apply Raft log batches the same way.
type Machine struct {
	table    *storage.Table
	notifier Notifier

	mu         sync.Mutex // guards queue and committing
	queue      []*pending
	committing bool
	notifyMu   sync.Mutex // orders notifications as commands committed
}

// maxBatch bounds the commands in one transaction; a batch that outgrows
// Badger's transaction limit is committed early and continued in a new one.
const maxBatch = 128

// pending is a queued command and where its caller waits.
type pending struct {
	cmd    Command
	env    Env
	out    any
	events []Event
	err    error
	done   chan struct{}
}

// NewMachine returns a Machine over the table that holds messaging state.
func NewMachine(table *storage.Table, n Notifier) *Machine {
	return &Machine{table: table, notifier: n}
}

// ErrRejected wraps domain errors: the command was valid to send but the
// state says no (for example PHONE_CODE_INVALID). Nothing was written.
var ErrRejected = errors.New("rejected")

// ErrUnavailable wraps failures of replicated state to take a command: no
// leader, or leadership lost while it was in flight. The command may or
// may not have been applied; retry it (commands are idempotent where it
// matters, by random_id).
var ErrUnavailable = errors.New("messaging state unavailable")

// Apply runs cmd after every command queued before it; when it returns nil
// the command's writes are on disk and its events have been handed to the
// notifier. Once queued, a command is applied even if ctx ends meanwhile:
// callers then retry with the same random_id, which commands deduplicate.
func (m *Machine) Apply(ctx context.Context, cmd Command, env Env) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := &pending{cmd: cmd, env: env, done: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, p)
	lead := !m.committing
	m.committing = true
	m.mu.Unlock()
	if lead {
		m.drain()
	}
	<-p.done
	if p.err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.Kind(), p.err)
	}
	return p.out, nil
}

// drain commits queued batches until the queue is empty.
func (m *Machine) drain() {
	for {
		m.mu.Lock()
		n := min(len(m.queue), maxBatch)
		if n == 0 {
			m.committing = false
			m.mu.Unlock()
			return
		}
		batch := m.queue[:n:n]
		m.queue = m.queue[n:]
		m.mu.Unlock()
		m.commit(batch)
	}
}

// commit applies batch in order in as few transactions as fit, commits
// them, notifies their events in order and wakes their callers.
func (m *Machine) commit(batch []*pending) {
	for len(batch) > 0 {
		n := m.commitSome(batch)
		batch = batch[n:]
	}
}

// commitSome applies a prefix of batch in one transaction and commits it;
// it returns how many commands it settled (at least one).
func (m *Machine) commitSome(batch []*pending) int {
	tx := m.table.Begin()
	defer tx.Discard()
	var kept []*pending // applied in tx, in order
	settled := 0
	for _, p := range batch {
		out, events, err := applyOne(&tx.Txn, p)
		if errors.Is(err, storage.ErrTxnTooBig) && len(kept) > 0 {
			break // commit what fits; p starts the next transaction
		}
		settled++
		if err == nil {
			p.out, p.events = out, events
			kept = append(kept, p)
			continue
		}
		// Badger cannot drop part of a transaction: start over without p.
		p.err = err
		tx.Discard()
		tx = m.table.Begin()
		for _, q := range kept {
			if q.out, q.events, q.err = applyOne(&tx.Txn, q); q.err != nil {
				// A command that applied before must apply again the same
				// way; if it does not, fail the rest rather than guess.
				err := fmt.Errorf("replay of %s: %w", q.cmd.Kind(), q.err)
				for _, r := range kept {
					r.err = err
				}
				kept = nil
				break
			}
		}
	}
	if len(kept) > 0 {
		if err := tx.Commit(); err != nil {
			for _, p := range kept {
				p.err = err
			}
		}
	}
	// Notify in commit order before waking callers, so a caller that acts
	// on its answer never overtakes its own events.
	m.notifyMu.Lock()
	if m.notifier != nil {
		for _, p := range kept {
			if p.err == nil && len(p.events) > 0 {
				m.notifier.Notify(p.events)
			}
		}
	}
	m.notifyMu.Unlock()
	for _, p := range batch[:settled] {
		close(p.done)
	}
	return settled
}

// applyOne runs one command in tx.
func applyOne(tx *storage.Txn, p *pending) (any, []Event, error) {
	res, err := p.cmd.apply(tx, p.env)
	if err != nil {
		return nil, nil, err
	}
	if a, ok := res.(Applied); ok {
		return a.Result, a.Events, nil
	}
	return res, nil, nil
}

// View runs a read-only query against a consistent snapshot.
func (m *Machine) View(fn func(tx storage.Reader) error) error {
	return m.table.View(func(tx *storage.Txn) error { return fn(tx) })
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
