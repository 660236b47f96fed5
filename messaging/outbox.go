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
//	outseq/<destination group>         the last seq used for that destination
//	outack/<destination group>         the last seq acknowledged (deleted)
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

// emit runs step, a command of the group Layout.GroupOf names, here and
// now when that is src, the group of the command emitting it (always, in
// the one-group layout), else appends it to src's outbox. It returns the
// step's events when it ran.
func emit(tx *storage.Txn, env Env, src int, step Command) ([]Event, error) {
	l := env.Layout()
	if g := l.DestOf(step); g != src {
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
	sk := key("outseq", int64(dest))
	seq, _, err := getInt(tx, sk)
	if err != nil {
		return err
	}
	if seq == 0 && dest < 0 {
		// The first step for another DC: list it among the destinations
		// (outdcs/ never shrinks, so a scan of it stays short).
		if err := tx.Set(key("outdcs", int64(dest)), nil); err != nil {
			return err
		}
	}
	seq++
	if err := putInt(tx, sk, seq); err != nil {
		return err
	}
	if env.notes != nil {
		env.notes.outbox = append(env.notes.outbox, OutboxMark{Dest: dest, Upto: seq})
	}
	return tx.Set(outboxKey(dest, seq), b)
}

func outboxKey(dest int, seq int64) []byte {
	return key("outbox", int64(dest), seq)
}

// outboxRange is what the outbox holds for dest: seqs (acked, last].
func outboxRange(tx storage.Reader, dest int) (acked, last int64, err error) {
	if last, _, err = getInt(tx, key("outseq", int64(dest))); err != nil || last == 0 {
		return 0, last, err
	}
	acked, _, err = getInt(tx, key("outack", int64(dest)))
	return acked, last, err
}

// OutboxEntry is one pending step of a group's outbox.
type OutboxEntry struct {
	Seq  int64
	Step []byte
}

// PendingOutbox lists, per destination group (of groups), the oldest
// entries of this group's outbox above after[dest] (what the pump
// already carried but has not acknowledged yet): at most InboxMaxSteps
// and about InboxMaxBytes each, in seq order. tx is the group's own
// replica. It reads keys, never scans: the outbox's deleted entries stay
// in Badger's memtable as versions a scan would walk.
func PendingOutbox(tx storage.Reader, groups int, after map[int]int64) (map[int][]OutboxEntry, error) {
	out := map[int][]OutboxEntry{}
	dests, err := outboxDests(tx, groups)
	if err != nil {
		return nil, err
	}
	for _, dest := range dests {
		acked, last, err := outboxRange(tx, dest)
		if err != nil {
			return nil, err
		}
		size := 0
		for seq := max(acked, after[dest]) + 1; seq <= last && len(out[dest]) < InboxMaxSteps && size < InboxMaxBytes; seq++ {
			v, err := tx.Get(outboxKey(dest, seq))
			if err != nil {
				return nil, fmt.Errorf("messaging: outbox entry %d for group %d: %w", seq, dest, err)
			}
			out[dest] = append(out[dest], OutboxEntry{Seq: seq, Step: v})
			size += len(v)
		}
	}
	return out, nil
}

// outboxDests are the destinations an outbox may hold entries for: the
// DC's groups, then the other DCs it ever sent to.
func outboxDests(tx storage.Reader, groups int) ([]int, error) {
	dests := make([]int, 0, groups)
	for g := range groups {
		dests = append(dests, g)
	}
	err := tx.Iterate([]byte("outdcs/"), nil, false, func(k, _ []byte) (bool, error) {
		if len(k) == len("outdcs/")+8 {
			dests = append(dests, int(int64(binary.BigEndian.Uint64(k[len("outdcs/"):]))))
		}
		return true, nil
	})
	return dests, err
}

// OutboxAge is how long the oldest unacknowledged entry for dest has
// waited at now (Unix seconds): 0 when there is none.
func OutboxAge(tx storage.Reader, dest int, now int64) (int64, error) {
	acked, last, err := outboxRange(tx, dest)
	if err != nil || last <= acked {
		return 0, err
	}
	v, err := tx.Get(outboxKey(dest, acked+1))
	if err != nil {
		return 0, err
	}
	_, env, err := DecodeCommand(v)
	if err != nil || env.Now == 0 || env.Now > now {
		return 0, err
	}
	return now - env.Now, nil
}

// OutboxDepth counts the entries of this group's outbox per destination
// group (of groups) that their destination has not acknowledged.
func OutboxDepth(tx storage.Reader, groups int) (map[int]int, error) {
	out := map[int]int{}
	dests, err := outboxDests(tx, groups)
	if err != nil {
		return nil, err
	}
	for _, dest := range dests {
		acked, last, err := outboxRange(tx, dest)
		if err != nil {
			return nil, err
		}
		if last > acked {
			out[dest] = int(last - acked)
		}
	}
	return out, nil
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
	case DeliverMessage, EditCopy, DeleteCopies, ReadOutbox, BlockedBy, DeviceIndex, RevokeGuest:
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
		if !isStep(step) || env.Layout().DestOf(step) != c.Group {
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
	n := 0
	for _, m := range c.Marks {
		acked, last, err := outboxRange(tx, m.Dest)
		if err != nil {
			return nil, err
		}
		upto := min(m.Upto, last)
		for seq := acked + 1; seq <= upto; seq++ {
			if err := tx.Delete(outboxKey(m.Dest, seq)); err != nil {
				return nil, err
			}
			n++
		}
		if upto > acked {
			if err := putInt(tx, key("outack", int64(m.Dest)), upto); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}
