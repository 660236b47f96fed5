package messaging

import (
	"context"
	"fmt"
	"sync"

	"github.com/mtnode/mtnode/storage"
)

// Replicated is the messaging state machine behind Raft: it implements
// replication.StateMachine (ApplyCommand, Restored) over log entries made
// by EncodeCommand, and Propose is the proposing side. It keeps no state
// of its own, so a snapshot restore needs nothing from it.
//
// Every replica applies every entry, and only one of them may push its
// events. ApplyCommand returns the command's Applied (result and events)
// as its value. With PushWhenLeader, the replica that leads when the
// entry's batch commits hands the events to the notifier (Committed);
// without it, raft hands the value back only to the proposer's future and
// Propose gives the events to the notifier there. Either way followers
// compute the same events and drop them.
type Replicated struct {
	notifier Notifier
	notifyMu sync.Mutex // one Notify at a time, as Machine does
	isLeader func() bool
	layout   Layout
	outbox   func() // called after a batch that wrote outbox entries commits
}

// SetLayout gives the state machine the DC's layout, before it applies
// anything. Commands route their steps by it.
func (r *Replicated) SetLayout(l Layout) { r.layout = l }

// OnOutbox sets fn to be called, on the replica that leads, after a
// committed batch appended to the outbox, so the pump can carry it.
func (r *Replicated) OnOutbox(fn func()) { r.outbox = fn }

// PushWhenLeader moves pushing from the proposer to the replica that
// leads when an entry is applied: events are handed to the notifier after
// their batch commits (replication.Committer), in commit order, only
// while isLeader says so. An entry a leader committed but could not
// answer for (it lost leadership, or its caller gave up) is then still
// pushed if the new leader applies it; one applied while leadership moves
// may be pushed by neither, and clients recover with getDifference.
func (r *Replicated) PushWhenLeader(isLeader func() bool) { r.isLeader = isLeader }

// Committed implements replication.Committer.
func (r *Replicated) Committed(values []any) {
	if r.isLeader == nil || !r.isLeader() {
		return
	}
	if r.outbox != nil {
		for _, v := range values {
			if a, ok := v.(Applied); ok && len(a.Outbox) > 0 {
				r.outbox()
				break
			}
		}
	}
	if r.notifier == nil {
		return
	}
	var events []Event
	for _, v := range values {
		if a, ok := v.(Applied); ok {
			events = append(events, a.Events...)
		}
	}
	if len(events) > 0 {
		r.notifyMu.Lock()
		r.notifier.Notify(events)
		r.notifyMu.Unlock()
	}
}

// NewReplicated returns a state machine whose proposals notify n (nil: no
// pushes).
func NewReplicated(n Notifier) *Replicated { return &Replicated{notifier: n} }

// ApplyCommand decodes the entry and applies it in tx with the Env it was
// proposed with; the value is an Applied. An entry that does not decode is
// rejected (with an error wrapping ErrCodec) on every replica alike. It
// implements replication.StateMachine.
func (r *Replicated) ApplyCommand(tx *storage.Txn, index uint64, data []byte) (any, error) {
	cmd, env, err := DecodeCommand(data)
	if err != nil {
		return nil, err
	}
	notes := &applyNotes{}
	env.layout, env.notes = &r.layout, notes
	res, err := cmd.apply(tx, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.Kind(), err)
	}
	a, ok := res.(Applied)
	if !ok {
		a = Applied{Result: res}
	}
	a.Outbox = notes.outbox
	return a, nil
}

// Restored implements replication.StateMachine; there is no cache to
// drop.
func (r *Replicated) Restored(index uint64) {}

// Proposer is the raft group commands are proposed to
// (*replication.Group): Apply proposes an entry, waits until it is applied
// on this replica and returns the state machine's value or rejection.
type Proposer interface {
	Apply(ctx context.Context, entry []byte) (any, error)
}

// Propose encodes cmd with env, proposes it through p and waits for it to
// be applied, then returns its result, as Machine.Apply does on one node;
// without PushWhenLeader it also hands the events to the notifier. On a
// follower p answers replication.ErrNotLeader and nothing is proposed. An
// error other than a rejection leaves the outcome unknown (the entry may
// still commit; its events are in the users' update logs, which clients
// read with getDifference): retry with the same random_id.
func (r *Replicated) Propose(ctx context.Context, p Proposer, cmd Command, env Env) (any, error) {
	a, err := r.ProposeApplied(ctx, p, cmd, env)
	return a.Result, err
}

// ProposeApplied is Propose returning the whole Applied: the result, and
// the outbox entries the command appended (which the caller may wait
// for, as sign-in does).
func (r *Replicated) ProposeApplied(ctx context.Context, p Proposer, cmd Command, env Env) (Applied, error) {
	entry, err := EncodeCommand(cmd, env)
	if err != nil {
		return Applied{}, err
	}
	v, err := p.Apply(ctx, entry)
	if err != nil {
		return Applied{}, err
	}
	a, ok := v.(Applied)
	if !ok {
		return Applied{}, fmt.Errorf("%s: unexpected value %T", cmd.Kind(), v)
	}
	if len(a.Events) > 0 && r.notifier != nil && r.isLeader == nil {
		r.notifyMu.Lock()
		r.notifier.Notify(a.Events)
		r.notifyMu.Unlock()
	}
	return a, nil
}
