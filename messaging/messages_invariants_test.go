package messaging

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

// checkInvariants verifies, over the whole table, the invariants DESIGN.md
// states for message boxes, dialogs and update logs.
func checkInvariants(t *testing.T, f *fixture, users []int64) {
	t.Helper()
	f.view(func(tx storage.Reader) error {
		for _, u := range users {
			st, err := GetState(tx, u)
			if err != nil {
				return err
			}
			// The log covers 1..pts without gaps or overlaps.
			next := 1
			recs, err := UpdatesSince(tx, u, 0, 1<<30)
			if err != nil {
				return err
			}
			for _, r := range recs {
				if r.Pts-r.PtsCount+1 != next || r.PtsCount < 1 {
					t.Fatalf("user %d: log entry %d (count %d) after pts %d", u, r.Pts, r.PtsCount, next-1)
				}
				next = r.Pts + 1
			}
			if next-1 != st.Pts {
				t.Fatalf("user %d: log ends at %d, state pts %d", u, next-1, st.Pts)
			}
			// Every message has its history entry and the reverse; ids are
			// below NextMsgID and dates never decrease with ids.
			msgs := map[int]*Message{}
			err = tx.Iterate(key("msg", u, ""), nil, false, func(k, v []byte) (bool, error) {
				var m Message
				if _, err := getJSONBytes(v, &m); err != nil {
					return false, err
				}
				msgs[m.ID] = &m
				if m.ID >= st.NextMsgID {
					t.Fatalf("user %d: message %d >= next id %d", u, m.ID, st.NextMsgID)
				}
				hv, err := tx.Get(key("hist", u, m.Peer.key(), m.ID))
				if err != nil || !bytes.Equal(hv, encodeHist(&m)) {
					t.Fatalf("user %d: message %d history entry %x, %v", u, m.ID, hv, err)
				}
				return true, nil
			})
			if err != nil {
				return err
			}
			type agg struct {
				count, top, unread int
			}
			byPeer := map[Peer]*agg{}
			nhist := 0
			var lastDate int64
			err = tx.Iterate(key("hist", u, ""), nil, false, func(k, v []byte) (bool, error) {
				e, err := decodeHist(k, v)
				if err != nil {
					return false, err
				}
				m := msgs[e.ID]
				if m == nil {
					t.Fatalf("user %d: history entry %d without message", u, e.ID)
				}
				nhist++
				a := byPeer[m.Peer]
				if a == nil {
					a = &agg{}
					byPeer[m.Peer] = a
				}
				a.count++
				a.top = max(a.top, e.ID)
				return true, nil
			})
			if err != nil {
				return err
			}
			if nhist != len(msgs) {
				t.Fatalf("user %d: %d history entries, %d messages", u, nhist, len(msgs))
			}
			ids := make([]int, 0, len(msgs))
			for id := range msgs {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			for _, id := range ids {
				if msgs[id].Date < lastDate {
					t.Fatalf("user %d: message %d dated before an older one", u, id)
				}
				lastDate = msgs[id].Date
			}
			// Dialogs agree with their messages; the order index and the
			// count agree with the dialogs.
			ndlg := 0
			err = tx.Iterate(key("dlg", u, ""), nil, false, func(k, v []byte) (bool, error) {
				var d Dialog
				if _, err := getJSONBytes(v, &d); err != nil {
					return false, err
				}
				ndlg++
				a := byPeer[d.Peer]
				if a == nil {
					a = &agg{}
				}
				unread := 0
				for _, m := range msgs {
					if m.Peer == d.Peer && !m.Out && m.ID > d.ReadInboxMaxID {
						unread++
					}
				}
				if d.Count != a.count || d.TopMessage != a.top || d.UnreadCount != unread {
					t.Fatalf("user %d dialog %+v: count %d top %d unread %d", u, d, a.count, a.top, unread)
				}
				if d.TopMessage == 0 && d.Draft == nil {
					t.Fatalf("user %d: empty dialog %+v kept", u, d)
				}
				if d.TopMessage != 0 && d.TopDate != msgs[d.TopMessage].Date {
					t.Fatalf("user %d dialog %+v: top date", u, d)
				}
				if _, err := tx.Get(d.orderKey(u)); err != nil {
					t.Fatalf("user %d dialog %+v: no order entry", u, d)
				}
				delete(byPeer, d.Peer)
				return true, nil
			})
			if err != nil {
				return err
			}
			if len(byPeer) != 0 {
				t.Fatalf("user %d: messages without a dialog: %v", u, byPeer)
			}
			nord := 0
			_ = tx.Iterate(key("dord", u, ""), nil, false, func(k, v []byte) (bool, error) { nord++; return true, nil })
			n, _, _ := getInt(tx, key("dcount", u))
			if nord != ndlg || int(n) != ndlg {
				t.Fatalf("user %d: %d dialogs, %d order entries, count %d", u, ndlg, nord, n)
			}
			pins, _ := pinned(tx, u)
			for _, p := range pins {
				if _, ok, _ := GetDialog(tx, u, p); !ok {
					t.Fatalf("user %d: pinned %v has no dialog", u, p)
				}
			}
		}
		return nil
	})
}

// TestRandomCommandsKeepInvariants applies a seeded random mix of every
// message command among four users and checks the invariants as it goes.
func TestRandomCommandsKeepInvariants(t *testing.T) {
	users := []int64{alice, bob, carol, UserID(1, 4)}
	f := newFixture(t, users...)
	rng := rand.New(rand.NewSource(1))
	pick := func() int64 { return users[rng.Intn(len(users))] }
	randomID := func(u int64) int {
		s := f.state(u)
		return 1 + rng.Intn(s.NextMsgID)
	}
	outcome := map[string]int{}
	for step := 0; step < 600; step++ {
		u, v := pick(), pick()
		var cmd Command
		switch r := rng.Intn(100); {
		case r < 45:
			cmd = SendMessage{From: u, To: UserPeer(v), RandomID: rng.Int63n(400), Text: fmt.Sprint("t", step), ClearDraft: rng.Intn(4) == 0}
		case r < 55:
			cmd = EditMessage{User: u, Peer: UserPeer(v), ID: randomID(u), Text: fmt.Sprint("e", step)}
		case r < 70:
			cmd = DeleteMessages{User: u, IDs: []int{randomID(u), randomID(u)}, Revoke: rng.Intn(2) == 0}
		case r < 80:
			cmd = ReadHistory{User: u, Peer: UserPeer(v), MaxID: rng.Intn(3) * randomID(u) / 2}
		case r < 87:
			cmd = ForwardMessages{From: u, FromPeer: UserPeer(pick()), IDs: []int{randomID(u)}, RandomIDs: []int64{rng.Int63n(400)}, To: UserPeer(v)}
		case r < 95:
			text := ""
			if rng.Intn(3) > 0 {
				text = fmt.Sprint("d", step)
			}
			cmd = SaveDraft{User: u, Peer: UserPeer(v), Text: text}
		default:
			cmd = ToggleDialogPin{User: u, Peer: UserPeer(v), Pinned: rng.Intn(3) > 0}
		}
		// Full-table checks are costly under -race: every few steps.
		check := step%5 == 0
		var before string
		if check {
			before = f.dump()
		}
		_, err := f.apply(cmd)
		outcome[cmd.Kind()+map[bool]string{true: " rejected", false: " ok"}[err != nil]]++
		if err != nil {
			if !isRejected(err) {
				t.Fatalf("step %d %s: %v", step, cmd.Kind(), err)
			}
			if check && f.dump() != before {
				t.Fatalf("step %d: rejected %s wrote", step, cmd.Kind())
			}
		}
		if check {
			checkInvariants(t, f, users)
		}
	}
	checkInvariants(t, f, users)
	t.Logf("outcomes: %v", outcome)
	for _, k := range []string{"messages.send ok", "messages.edit ok", "messages.delete ok", "messages.read ok", "messages.forward ok", "messages.save_draft ok", "messages.toggle_pin ok"} {
		if outcome[k] == 0 {
			t.Errorf("no %s in the mix", k)
		}
	}
}

func isRejected(err error) bool { return errors.Is(err, ErrRejected) }
