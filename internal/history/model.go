package history

import (
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// opInput is the porcupine Input of every operation.
type opInput struct {
	kind     opKind
	chat     string
	randomID int64 // sends only
}

// opOutput is the porcupine Output of every operation.
type opOutput struct {
	unknown bool    // sends only: outcome not observed
	msgID   int     // acknowledged sends
	entries []Entry // reads
}

// chatState is the per-chat model state: the applied messages in apply
// order. A MsgID of 0 marks a message whose id nobody has observed yet.
// States are never mutated; steps that change something return a copy.
//
// Invariants kept by step: random_ids are distinct, and the known ids can be
// completed (filling the zeros) into a strictly increasing sequence of
// positive integers.
type chatState []Entry

// Model returns the porcupine model used by [Recorder.Check]: per-chat state
// is the ordered list of applied messages, and histories are partitioned by
// chat.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition:         partitionByChat,
		Init:              func() any { return chatState(nil) },
		Step:              step,
		Equal:             equalStates,
		DescribeOperation: describeOperation,
		DescribeState:     func(s any) string { return describeEntries(s.(chatState)) },
	}
}

func partitionByChat(ops []porcupine.Operation) [][]porcupine.Operation {
	index := make(map[string]int)
	var parts [][]porcupine.Operation
	for _, op := range ops {
		chat := op.Input.(opInput).chat
		i, ok := index[chat]
		if !ok {
			i = len(parts)
			index[chat] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

func step(state, input, output any) (bool, any) {
	st := state.(chatState)
	in := input.(opInput)
	out := output.(opOutput)
	if in.kind == kindSend {
		return stepSend(st, in.randomID, out)
	}
	return stepRead(st, out.entries)
}

func stepSend(st chatState, randomID int64, out opOutput) (bool, any) {
	pos := indexOf(st, randomID)
	if out.unknown {
		// Linearized at all means it took effect; the "never applied"
		// case is covered by the infinite return time, which lets the
		// checker put it after every observation.
		if pos >= 0 {
			return true, st
		}
		return true, appendEntry(st, Entry{RandomID: randomID})
	}
	if out.msgID <= 0 {
		return false, st
	}
	if pos >= 0 {
		// Retry of an applied message: the server must answer with the
		// id of the first apply.
		switch st[pos].MsgID {
		case out.msgID:
			return true, st
		case 0:
			ns := append(chatState(nil), st...)
			ns[pos].MsgID = out.msgID
			if !idsFeasible(ns) {
				return false, st
			}
			return true, ns
		default:
			return false, st
		}
	}
	if !canAppend(st, out.msgID) {
		return false, st
	}
	return true, appendEntry(st, Entry{RandomID: randomID, MsgID: out.msgID})
}

func stepRead(st chatState, got []Entry) (bool, any) {
	if len(got) != len(st) {
		return false, st
	}
	var ns chatState // copy made only if the read reveals new ids
	for i, e := range got {
		if e.RandomID != st[i].RandomID || e.MsgID < 0 {
			return false, st
		}
		if e.MsgID == 0 || e.MsgID == st[i].MsgID {
			continue
		}
		if st[i].MsgID != 0 {
			return false, st
		}
		if ns == nil {
			ns = append(chatState(nil), st...)
		}
		ns[i].MsgID = e.MsgID
	}
	if ns == nil {
		return true, st
	}
	if !idsFeasible(ns) {
		return false, st
	}
	return true, ns
}

func indexOf(st chatState, randomID int64) int {
	for i, e := range st {
		if e.RandomID == randomID {
			return i
		}
	}
	return -1
}

func appendEntry(st chatState, e Entry) chatState {
	ns := make(chatState, len(st), len(st)+1)
	copy(ns, st)
	return append(ns, e)
}

// idsFeasible reports whether the zeros in st can be replaced so that the ids
// form a strictly increasing sequence of positive integers: between two known
// ids there must be room for the unknown ones.
func idsFeasible(st chatState) bool {
	lastID, lastPos := 0, -1
	for i, e := range st {
		if e.MsgID == 0 {
			continue
		}
		if e.MsgID-lastID < i-lastPos {
			return false
		}
		lastID, lastPos = e.MsgID, i
	}
	return true
}

// canAppend reports whether id may follow everything in st.
func canAppend(st chatState, id int) bool {
	for i := len(st) - 1; i >= 0; i-- {
		if st[i].MsgID != 0 {
			return id-st[i].MsgID >= len(st)-i
		}
	}
	return id >= len(st)+1
}

func equalStates(a, b any) bool {
	x, y := a.(chatState), b.(chatState)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

const describeLimit = 12

func describeEntries(es []Entry) string {
	parts := make([]string, 0, min(len(es), describeLimit)+1)
	for i, e := range es {
		if len(es) > describeLimit && i == describeLimit-1 {
			parts = append(parts, fmt.Sprintf("...%d more...", len(es)-describeLimit))
			parts = append(parts, describeEntry(es[len(es)-1]))
			break
		}
		parts = append(parts, describeEntry(e))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func describeEntry(e Entry) string {
	if e.MsgID == 0 {
		return fmt.Sprintf("%d:?", e.RandomID)
	}
	return fmt.Sprintf("%d:%d", e.RandomID, e.MsgID)
}

func describeOperation(input, output any) string {
	in := input.(opInput)
	out := output.(opOutput)
	if in.kind == kindSend {
		if out.unknown {
			return fmt.Sprintf("send(%d) -> ?", in.randomID)
		}
		return fmt.Sprintf("send(%d) -> %d", in.randomID, out.msgID)
	}
	return fmt.Sprintf("read -> %d msgs %s", len(out.entries), describeEntries(out.entries))
}

// Verdict is the outcome of a linearizability check.
type Verdict string

const (
	// Linearizable: some single order of the operations explains every
	// observation.
	Linearizable Verdict = "ok"
	// Illegal: no such order exists; the server violated the model.
	Illegal Verdict = "illegal"
	// Inconclusive: the checker ran out of time before deciding.
	Inconclusive Verdict = "unknown"
)

// Result is what [Recorder.Check] found.
type Result struct {
	Verdict Verdict
	// Ops is the number of operations handed to the checker, Chats the
	// number of partitions, and Compacted the number of send attempts
	// merged into another attempt of the same random_id or dropped as
	// unobservable (unknown and pending reads are not counted anywhere).
	Ops, Chats, Compacted int
	Elapsed               time.Duration

	info porcupine.LinearizationInfo
}

// Ok reports whether the history was proven linearizable.
func (r Result) Ok() bool { return r.Verdict == Linearizable }

func (r Result) String() string {
	return fmt.Sprintf("linearizability %s (%d ops in %d chats, %d send attempts compacted, %v)",
		r.Verdict, r.Ops, r.Chats, r.Compacted, r.Elapsed.Round(time.Millisecond))
}

// WriteVisualization writes porcupine's interactive HTML view of the history
// and of the longest partial linearizations found to path. It is most useful
// when the verdict is Illegal: the point where every linearization gets stuck
// is where the server misbehaved.
func (r Result) WriteVisualization(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := porcupine.Visualize(Model(), r.info, f); err != nil {
		f.Close()
		return fmt.Errorf("history: visualize: %w", err)
	}
	return f.Close()
}

// sendGroup aggregates the attempts to send one random_id into one chat.
type sendGroup struct {
	call     int64 // earliest invocation of any attempt
	acked    bool
	ret      int64 // earliest acknowledgement
	msgID    int
	client   int // client of that acknowledgement
	conflict bool
	emitted  bool
}

// operations converts records to porcupine operations, compacting retries
// (see DESIGN.md, "Compaction"):
//
//   - all attempts of one random_id in one chat become a single operation
//     spanning from the earliest invocation to the earliest acknowledgement,
//     with the acknowledged id; if no attempt was acknowledged the operation
//     has an "unknown" output and an infinite return time;
//   - a random_id that was never acknowledged and never appears in any
//     successful read is dropped: placing it after everything else is
//     always possible, so it cannot change the verdict;
//   - if acknowledgements of one random_id disagree, the attempts are kept
//     separate so the checker rejects them;
//   - unknown and pending reads are dropped.
//
// It returns the operations and the number of send attempts that were
// merged away or dropped.
func operations(recs []record) ([]porcupine.Operation, int) {
	observed := make(map[sendKey]bool)
	groups := make(map[sendKey]*sendGroup)
	for _, rec := range recs {
		if rec.kind == kindRead {
			if rec.status == statusOk {
				for _, e := range rec.entries {
					observed[sendKey{rec.chat, e.RandomID}] = true
				}
			}
			continue
		}
		k := sendKey{rec.chat, rec.randomID}
		g := groups[k]
		if g == nil {
			g = &sendGroup{call: rec.call}
			groups[k] = g
		}
		g.call = min(g.call, rec.call)
		if rec.status != statusOk {
			continue
		}
		if g.acked && g.msgID != rec.msgID {
			g.conflict = true
		}
		if !g.acked || rec.ret < g.ret {
			g.acked, g.ret, g.msgID, g.client = true, rec.ret, rec.msgID, rec.client
		}
	}

	ops := make([]porcupine.Operation, 0, len(recs))
	compacted := 0
	for _, rec := range recs {
		op := porcupine.Operation{
			ClientId: rec.client,
			Input:    opInput{kind: rec.kind, chat: rec.chat, randomID: rec.randomID},
			Call:     rec.call,
		}
		if rec.kind == kindRead {
			if rec.status != statusOk {
				continue
			}
			op.Output, op.Return = opOutput{entries: rec.entries}, rec.ret
			ops = append(ops, op)
			continue
		}
		k := sendKey{rec.chat, rec.randomID}
		g := groups[k]
		switch {
		case g.conflict && rec.status == statusOk:
			op.Output, op.Return = opOutput{msgID: rec.msgID}, rec.ret
		case g.conflict:
			op.Output, op.Return = opOutput{unknown: true}, math.MaxInt64
		case g.emitted:
			compacted++
			continue
		case g.acked:
			g.emitted = true
			op.ClientId, op.Call = g.client, g.call
			op.Output, op.Return = opOutput{msgID: g.msgID}, g.ret
		case observed[k]:
			g.emitted = true
			op.Call = g.call
			op.Output, op.Return = opOutput{unknown: true}, math.MaxInt64
		default:
			compacted++
			continue
		}
		ops = append(ops, op)
	}
	return ops, compacted
}

// Check runs the porcupine linearizability checker over everything recorded
// so far, one partition per chat. A timeout of 0 means no limit; when the
// limit is hit the verdict is Inconclusive. Operations still pending are
// treated like Unknown ones. The error is non-nil only when the recorder
// overflowed or was misused, in which case no verdict is given.
func (r *Recorder) Check(timeout time.Duration) (Result, error) {
	recs, err := r.snapshot()
	if err != nil {
		return Result{}, err
	}
	ops, compacted := operations(recs)
	chats := make(map[string]struct{})
	for _, op := range ops {
		chats[op.Input.(opInput).chat] = struct{}{}
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(Model(), ops, timeout)
	out := Result{Ops: len(ops), Compacted: compacted, Chats: len(chats), Elapsed: time.Since(start), info: info}
	switch res {
	case porcupine.Ok:
		out.Verdict = Linearizable
	case porcupine.Illegal:
		out.Verdict = Illegal
	default:
		out.Verdict = Inconclusive
	}
	return out, nil
}
