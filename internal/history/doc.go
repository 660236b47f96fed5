// Package history records what clients observed while a chat workload ran
// against a replicated messaging server, and decides afterwards whether those
// observations could have come from a single, correct, sequential message
// log. It is meant for fault-injection tests (killed nodes, network
// partitions) where the interesting question is not "did every request
// succeed" but "is everything the clients saw consistent with one history".
//
// # Recording
//
// A [Recorder] is shared by every client goroutine of a test. Before a
// request is sent the client calls [Recorder.BeginSend] or
// [Recorder.BeginRead]; when the outcome is known it completes the returned
// [Op] exactly once:
//
//	op := rec.BeginSend(client, chat, randomID)
//	id, err := sendMessage(...)
//	if err != nil {
//		op.Unknown() // timeout, reset connection: it may or may not have applied
//	} else {
//		op.Ok(id)
//	}
//
//	op = rec.BeginRead(client, chat)
//	msgs, err := readHistory(...)
//	if err != nil {
//		op.Unknown() // an unanswered read tells us nothing and is dropped
//	} else {
//		op.ReadOk(msgs) // oldest first
//	}
//
// Timestamps come from a process-wide counter, so an operation that was
// completed before another one began is always ordered before it.
//
// # Checking
//
// [Recorder.Check] hands the history to the porcupine linearizability
// checker with a per-chat model (see [Model]); the history is split by chat
// so each chat is searched independently. A failing [Result] can be written
// out as porcupine's interactive HTML page with [Result.WriteVisualization].
//
// [Recorder.Audit] is a direct, non-search check of the counting invariants
// against the final contents of every chat (acknowledged sends present
// exactly once, no duplicates, ids increasing, real-time order respected).
// Its messages name the offending random_ids and operations, which makes it
// the better first read when something is wrong.
//
// # Conventions
//
// Message ids are positive. An [Entry] whose MsgID is 0 means "the id was not
// observed" and matches any id; this lets a harness that cannot see
// comparable ids (for example when each member has its own id space) still
// check contents and order. Client numbers are small non-negative integers
// (they become rows in the visualization).
//
// The recorder is bounded: beyond [Options.MaxOps] operations or
// [Options.MaxReadEntries] stored read entries it stops recording, and Check
// and Audit then fail with [ErrTooManyOps] instead of judging a truncated
// history. See DESIGN.md in this directory for the model and its invariants.
package history
