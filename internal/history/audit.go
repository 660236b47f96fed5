package history

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// maxAuditProblems bounds how many problems Audit spells out.
const maxAuditProblems = 100

// sendKey identifies a logical message: retries share it.
type sendKey struct {
	chat     string
	randomID int64
}

// message aggregates every attempt to send one random_id into one chat.
type message struct {
	key       sendKey
	attempts  int
	firstCall int64 // earliest invocation of any attempt
	acked     bool
	ackRet    int64 // earliest acknowledgement (math.MaxInt64 if none)
	ackID     int   // id of that acknowledgement
	ackOp     int   // op index of that acknowledgement
	ackClient int
}

func (m *message) String() string {
	if m.acked {
		return fmt.Sprintf("random_id %d (acked id %d by op #%d, client %d)", m.key.randomID, m.ackID, m.ackOp, m.ackClient)
	}
	return fmt.Sprintf("random_id %d (never acked, %d attempt(s))", m.key.randomID, m.attempts)
}

type problems struct {
	list  []error
	total int
}

func (p *problems) addf(format string, args ...any) {
	p.total++
	if len(p.list) < maxAuditProblems {
		p.list = append(p.list, fmt.Errorf(format, args...))
	}
}

func (p *problems) err() error {
	if p.total == 0 {
		return nil
	}
	errs := p.list
	if p.total > len(p.list) {
		errs = append(errs, fmt.Errorf("... and %d more problem(s)", p.total-len(p.list)))
	}
	return fmt.Errorf("history audit: %d problem(s):\n%w", p.total, errors.Join(errs...))
}

// Audit checks the recorded history against final, the contents of every
// chat read once the system was quiet and healed (oldest first). Unlike
// Check it does not search for a linearization; it verifies, directly:
//
//   - every acknowledged send is present exactly once in its chat's final
//     contents, with the id it was acknowledged with;
//   - no random_id appears twice in any recorded read or final list, and
//     nothing appears that was never sent;
//   - known message ids strictly increase along every list;
//   - all acknowledgements of one random_id (retries) carry the same id;
//   - if message A was acknowledged before any attempt of message B began,
//     A precedes B in the final list and A's id is smaller.
//
// A chat with acknowledged sends that is missing from final counts as
// empty. The error lists up to 100 problems; nil means none were found.
func (r *Recorder) Audit(final map[string][]Entry) error {
	recs, err := r.snapshot()
	if err != nil {
		return err
	}
	var p problems

	msgs := make(map[sendKey]*message)
	for i, rec := range recs {
		if rec.kind != kindSend {
			continue
		}
		k := sendKey{rec.chat, rec.randomID}
		m := msgs[k]
		if m == nil {
			m = &message{key: k, firstCall: rec.call, ackRet: math.MaxInt64}
			msgs[k] = m
		}
		m.attempts++
		m.firstCall = min(m.firstCall, rec.call)
		if rec.status != statusOk {
			continue
		}
		if rec.msgID <= 0 {
			p.addf("chat %q: op #%d (client %d) acked random_id %d with non-positive id %d", rec.chat, i, rec.client, rec.randomID, rec.msgID)
		}
		if m.acked && m.ackID != rec.msgID {
			p.addf("chat %q: random_id %d acked with id %d by op #%d (client %d) but with id %d by op #%d (client %d): retry not idempotent",
				rec.chat, rec.randomID, m.ackID, m.ackOp, m.ackClient, rec.msgID, i, rec.client)
		}
		if !m.acked || rec.ret < m.ackRet {
			m.acked, m.ackRet, m.ackID, m.ackOp, m.ackClient = true, rec.ret, rec.msgID, i, rec.client
		}
	}

	// Every successful read must be well formed on its own.
	for i, rec := range recs {
		if rec.kind == kindRead && rec.status == statusOk {
			checkList(&p, fmt.Sprintf("read op #%d (client %d) of chat %q", i, rec.client, rec.chat), rec.chat, rec.entries, msgs)
		}
	}

	// Group messages by chat, in a stable order for readable output.
	byChat := make(map[string][]*message)
	for _, m := range msgs {
		byChat[m.key.chat] = append(byChat[m.key.chat], m)
	}
	chats := make([]string, 0, len(byChat)+len(final))
	for c := range byChat {
		chats = append(chats, c)
	}
	for c := range final {
		if _, ok := byChat[c]; !ok {
			chats = append(chats, c)
		}
	}
	sort.Strings(chats)

	for _, chat := range chats {
		list := final[chat]
		checkList(&p, fmt.Sprintf("final contents of chat %q", chat), chat, list, msgs)
		pos := make(map[int64]int, len(list))
		ids := make(map[int64]int, len(list))
		for i, e := range list {
			if _, dup := pos[e.RandomID]; !dup {
				pos[e.RandomID] = i
				ids[e.RandomID] = e.MsgID
			}
		}
		ms := byChat[chat]
		slices.SortFunc(ms, func(a, b *message) int { return cmp.Compare(a.firstCall, b.firstCall) })
		for _, m := range ms {
			if !m.acked {
				continue
			}
			at, ok := pos[m.key.randomID]
			if !ok {
				p.addf("chat %q: acknowledged %s is missing from the final contents (lost write)", chat, m)
				continue
			}
			if id := ids[m.key.randomID]; id != 0 && id != m.ackID {
				p.addf("chat %q: %s is at position %d of the final contents with id %d", chat, m, at, id)
			}
		}
		checkRealTimeOrder(&p, chat, ms, pos)
	}
	return p.err()
}

// checkList reports duplicates, unknown random_ids and non-increasing ids in
// one observed list.
func checkList(p *problems, what, chat string, list []Entry, msgs map[sendKey]*message) {
	seen := make(map[int64]int, len(list))
	lastID, lastPos := 0, -1
	for i, e := range list {
		if j, dup := seen[e.RandomID]; dup {
			p.addf("%s: random_id %d appears at positions %d and %d (duplicate)", what, e.RandomID, j, i)
		} else {
			seen[e.RandomID] = i
		}
		if _, sent := msgs[sendKey{chat, e.RandomID}]; !sent {
			p.addf("%s: random_id %d at position %d was never sent", what, e.RandomID, i)
		}
		if e.MsgID < 0 {
			p.addf("%s: random_id %d at position %d has negative id %d", what, e.RandomID, i, e.MsgID)
			continue
		}
		if e.MsgID == 0 {
			continue
		}
		if e.MsgID <= lastID {
			p.addf("%s: id %d (random_id %d, position %d) does not exceed the earlier id %d at position %d",
				what, e.MsgID, e.RandomID, i, lastID, lastPos)
		}
		lastID, lastPos = e.MsgID, i
	}
}

// checkRealTimeOrder verifies that an acknowledged message B whose first
// attempt started after message A was acknowledged comes after A, both in
// the final list (pos) and by acknowledged id. ms must be sorted by
// firstCall. The sweep keeps, over all A acknowledged before the current B
// started, the one with the greatest position and the one with the greatest
// id; comparing B against those two suffices.
func checkRealTimeOrder(p *problems, chat string, ms []*message, pos map[int64]int) {
	var acked []*message
	for _, m := range ms {
		if m.acked {
			acked = append(acked, m)
		}
	}
	byRet := slices.Clone(acked)
	slices.SortFunc(byRet, func(a, b *message) int { return cmp.Compare(a.ackRet, b.ackRet) })
	var maxPos, maxID *message
	next := 0
	for _, b := range acked { // in firstCall order
		for next < len(byRet) && byRet[next].ackRet < b.firstCall {
			a := byRet[next]
			next++
			if _, ok := pos[a.key.randomID]; ok && (maxPos == nil || pos[a.key.randomID] > pos[maxPos.key.randomID]) {
				maxPos = a
			}
			if maxID == nil || a.ackID > maxID.ackID {
				maxID = a
			}
		}
		if bp, ok := pos[b.key.randomID]; ok && maxPos != nil && pos[maxPos.key.randomID] > bp {
			p.addf("chat %q: %s was first sent after %s had been acknowledged, yet sits before it in the final contents (positions %d < %d)",
				chat, b, maxPos, bp, pos[maxPos.key.randomID])
		}
		if maxID != nil && maxID.ackID >= b.ackID {
			p.addf("chat %q: %s was first sent after %s had been acknowledged, yet got a smaller or equal id",
				chat, b, maxID)
		}
	}
}
