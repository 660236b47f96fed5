package messaging

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mtnode/mtnode/storage"
)

// The outbox carries a command's effects to other groups (DESIGN.md,
// "Sharding the state"). A command that must change another user's box
// calls emit with the step to run there: if that user's box is in the same
// group the step runs at once, in the same transaction; otherwise it is
// appended to this group's outbox, in the same transaction as the rest of
// the command, under
//
//	outbox/<destination group>/<seq>   the step, encoded by EncodeCommand
//	outseq                             the last seq used (one counter per group)
//
// The group's leader pumps its outbox: it proposes the entries for one
// destination, in seq order, as one Inbox command on the destination
// group, and now and then an OutboxAck here that deletes what the
// destinations applied. The destination keeps
//
//	inbox/<source group>               the last seq it applied from there
//
// and skips anything at or below it, so a batch pumped twice (the pump's
// leader died between the two proposals) applies once: exactly once in
// effect, in seq order per source, hence in order per chat.

// Bounds of one Inbox command.
const (
	InboxMaxSteps = 256
	InboxMaxBytes = 512 << 10
)

// Layout is the layout the command is applied under.
func (e Env) Layout() Layout {
	if e.layout == nil {
		return Layout{}
	}
	return *e.layout
}

// emit runs step, which belongs to dest's group, here and now when that
// is this group (or the layout has one group), else appends it to the
// outbox. It returns the step's events when it ran.
func emit(tx *storage.Txn, env Env, from, dest int64, step Command) ([]Event, error) {
	l := env.Layout()
	if g := l.UserGroup(dest); g != l.UserGroup(from) {
		return nil, appendOutbox(tx, env, g, step)
	}
	res, err := step.apply(tx, env)
	if err != nil {
		return nil, err
	}
	if a, ok := res.(Applied); ok {
		return a.Events, nil
	}
	return nil, nil
}

func appendOutbox(tx *storage.Txn, env Env, dest int, step Command) error {
	b, err := EncodeCommand(step, Env{Now: env.Now})
	if err != nil {
		return err
	}
	seq, _, err := getInt(tx, []byte("outseq"))
	if err != nil {
		return err
	}
	seq++
	if err := putInt(tx, []byte("outseq"), seq); err != nil {
		return err
	}
	if env.notes != nil {
		env.notes.outbox = true
	}
	return tx.Set(outboxKey(dest, seq), b)
}

func outboxKey(dest int, seq int64) []byte {
	return key("outbox", int64(dest), seq)
}

// OutboxEntry is one pending step of a group's outbox.
type OutboxEntry struct {
	Seq  int64
	Step []byte
}

// PendingOutbox lists, per destination group, the oldest entries of this
// group's outbox above after[dest] (what the pump already carried but has
// not acknowledged yet): at most InboxMaxSteps and about InboxMaxBytes
// each, in seq order. tx is the group's own replica.
func PendingOutbox(tx storage.Reader, after map[int]int64) (map[int][]OutboxEntry, error) {
	out := map[int][]OutboxEntry{}
	size := map[int]int{}
	err := tx.Iterate([]byte("outbox/"), nil, false, func(k, v []byte) (bool, error) {
		if len(k) != len("outbox/")+8+1+8 {
			return false, fmt.Errorf("messaging: bad outbox key %x", k)
		}
		dest := int(binary.BigEndian.Uint64(k[7:]))
		seq := int64(binary.BigEndian.Uint64(k[16:]))
		if seq <= after[dest] || len(out[dest]) >= InboxMaxSteps || size[dest]+len(v) > InboxMaxBytes && len(out[dest]) > 0 {
			return true, nil
		}
		out[dest] = append(out[dest], OutboxEntry{Seq: seq, Step: v})
		size[dest] += len(v)
		return true, nil
	})
	return out, err
}

// OutboxDepth counts the pending entries of this group's outbox per
// destination group.
func OutboxDepth(tx storage.Reader) (map[int]int, error) {
	out := map[int]int{}
	err := tx.Iterate([]byte("outbox/"), nil, false, func(k, _ []byte) (bool, error) {
		if len(k) >= 15 {
			out[int(binary.BigEndian.Uint64(k[7:]))]++
		}
		return true, nil
	})
	return out, err
}

// Inbox applies steps another group's outbox sent here, in order,
// skipping any at or below the last seq already applied from Src. A step
// that is rejected is skipped: rejections are deterministic, and a
// retried batch must not wedge the queue behind it.
type Inbox struct {
	Group int
	Src   int
	Seqs  []int64
	Steps [][]byte
}

// Kind implements Command.
func (Inbox) Kind() string { return "outbox.inbox" }

// InboxResult is Inbox's result: the last seq from Src now applied.
type InboxResult struct {
	Upto int64
}

// ErrStepKind is the rejection of an Inbox step that is not a cross-group
// step.
var ErrStepKind = errors.New("messaging: not an outbox step")

// isStep reports whether cmd may arrive through an outbox.
func isStep(cmd Command) bool {
	switch cmd.(type) {
	case DeliverMessage, EditCopy, DeleteCopies, ReadOutbox, BlockedBy:
		return true
	}
	return false
}

func (c Inbox) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.Seqs) != len(c.Steps) || len(c.Steps) > InboxMaxSteps {
		return nil, fmt.Errorf("%w: inbox of %d seqs, %d steps", ErrCodec, len(c.Seqs), len(c.Steps))
	}
	mk := key("inbox", int64(c.Src))
	last, _, err := getInt(tx, mk)
	if err != nil {
		return nil, err
	}
	var evs []Event
	for i, b := range c.Steps {
		if c.Seqs[i] <= last {
			continue
		}
		last = c.Seqs[i]
		step, senv, err := DecodeCommand(b)
		if err != nil {
			continue
		}
		if !isStep(step) || env.Layout().GroupOf(step) != c.Group {
			continue
		}
		senv.layout = env.layout
		res, err := step.apply(tx, senv)
		if errors.Is(err, ErrRejected) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s from group %d: %w", step.Kind(), c.Src, err)
		}
		if a, ok := res.(Applied); ok {
			evs = append(evs, a.Events...)
		}
	}
	if err := putInt(tx, mk, last); err != nil {
		return nil, err
	}
	return Applied{Result: InboxResult{Upto: last}, Events: evs}, nil
}

// OutboxAck deletes this group's outbox entries that their destinations
// applied: for each mark, those for Dest up to Upto.
type OutboxAck struct {
	Group int
	Marks []OutboxMark
}

// OutboxMark says destination group Dest applied this group's steps up
// to seq Upto.
type OutboxMark struct {
	Dest int
	Upto int64
}

// Kind implements Command.
func (OutboxAck) Kind() string { return "outbox.ack" }

func (c OutboxAck) apply(tx *storage.Txn, env Env) (any, error) {
	var del [][]byte
	for _, m := range c.Marks {
		err := tx.Iterate(append(key("outbox", int64(m.Dest)), '/'), nil, false, func(k, _ []byte) (bool, error) {
			if len(k) < 8 || int64(binary.BigEndian.Uint64(k[len(k)-8:])) > m.Upto {
				return false, nil
			}
			del = append(del, append([]byte(nil), k...))
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, k := range del {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	return len(del), nil
}
