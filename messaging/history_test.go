package messaging

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

// refPage is the pagination rule of https://core.telegram.org/api/offsets
// written the obvious way over the whole newest-first list.
func refPage(all []*Message, q HistoryQuery) []int {
	off := 0
	switch {
	case q.OffsetID > 0:
		for _, m := range all {
			if m.ID >= q.OffsetID {
				off++
			}
		}
	case q.OffsetDate > 0:
		for _, m := range all {
			if m.Date >= q.OffsetDate {
				off++
			}
		}
	}
	limit := clampLimit(q.Limit, HistoryMax)
	a, b := max(off+q.AddOffset, 0), min(off+q.AddOffset+limit, len(all))
	var out []int
	for i := a; i < b; i++ {
		m := all[i]
		if (q.MaxID > 0 && m.ID >= q.MaxID) || (q.MinID > 0 && m.ID <= q.MinID) ||
			(q.MaxDate > 0 && m.Date >= q.MaxDate) || (q.MinDate > 0 && m.Date <= q.MinDate) {
			continue
		}
		out = append(out, m.ID)
	}
	return out
}

func ids(ms []*Message) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// historyFixture builds alice's dialog with bob: 40 messages with ids made
// sparse by a second dialog, dates shared by pairs, and a few deleted.
func historyFixture(t *testing.T) (*fixture, []*Message) {
	f := newFixture(t, alice, bob, carol)
	for i := 0; i < 40; i++ {
		env := Env{Now: 1_700_000_000 + int64(i/2)}
		from, to := alice, bob
		if i%3 == 0 {
			from, to = bob, alice
		}
		text := fmt.Sprintf("message %d", i)
		if i%5 == 0 {
			text = fmt.Sprintf("Needle %d", i)
		}
		if _, err := f.m.Apply(context.Background(), SendMessage{From: from, To: UserPeer(to), RandomID: int64(i + 1), Text: text}, env); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			f.send(alice, carol, "elsewhere")
		}
	}
	var all []*Message
	f.view(func(tx storage.Reader) error {
		return tx.Iterate(histPrefix(alice, UserPeer(bob)), nil, true, func(k, v []byte) (bool, error) {
			e, err := decodeHist(k, v)
			if err != nil {
				return false, err
			}
			m, _, err := GetMessage(tx, alice, e.ID)
			all = append(all, m)
			return true, err
		})
	})
	f.must(DeleteMessages{User: alice, IDs: []int{all[3].ID, all[10].ID, all[11].ID}})
	all = append(append(all[:3:3], all[4:10]...), all[12:]...)
	if len(all) != 37 {
		t.Fatalf("%d messages", len(all))
	}
	return f, all
}

func TestHistoryMatchesOffsetsSpec(t *testing.T) {
	f, all := historyFixture(t)
	top, bottom := all[0].ID, all[len(all)-1].ID
	offsetIDs := []int{0, 1, bottom, all[3].ID, all[3].ID + 1, all[20].ID, top, top + 1, top + 50}
	dates := []int64{0, all[30].Date, all[5].Date, all[0].Date, all[0].Date + 1, 1}
	adds := []int{0, 1, 5, -1, -5, -10, -20, -40, 36, 100}
	limits := []int{0, 1, 5, 10, 20, 100, 1000}
	filters := [][2]int{{0, 0}, {all[5].ID, 0}, {0, all[30].ID}, {all[5].ID, all[30].ID}}
	n := 0
	f.view(func(tx storage.Reader) error {
		check := func(q HistoryQuery) {
			pg, err := History(tx, alice, UserPeer(bob), q)
			if err != nil {
				t.Fatal(err)
			}
			want := refPage(all, q)
			if fmt.Sprint(ids(pg.Msgs)) != fmt.Sprint(want) {
				t.Fatalf("%+v:\n got %v\nwant %v", q, ids(pg.Msgs), want)
			}
			if pg.Count != len(all) {
				t.Fatalf("count %d", pg.Count)
			}
			n++
		}
		for _, id := range offsetIDs {
			for _, add := range adds {
				for _, l := range limits {
					for _, fl := range filters {
						check(HistoryQuery{OffsetID: id, AddOffset: add, Limit: l, MaxID: fl[0], MinID: fl[1]})
					}
				}
			}
		}
		for _, d := range dates {
			for _, add := range adds {
				for _, l := range limits {
					check(HistoryQuery{OffsetDate: d, AddOffset: add, Limit: l})
				}
			}
		}
		return nil
	})
	t.Logf("%d queries", n)
}

func TestSearchMatchesOffsetsSpec(t *testing.T) {
	f, all := historyFixture(t)
	var needles []*Message
	for _, m := range all {
		if strings.Contains(strings.ToLower(m.Text), "needle") {
			needles = append(needles, m)
		}
	}
	f.view(func(tx storage.Reader) error {
		for _, q := range []HistoryQuery{
			{}, {Limit: 2}, {Limit: 2, AddOffset: 2}, {OffsetID: needles[3].ID, Limit: 3},
			{OffsetID: needles[3].ID, AddOffset: -2, Limit: 4}, {MinDate: needles[5].Date},
		} {
			pg, err := Search(tx, alice, UserPeer(bob), "NEEDLE", 0, q)
			if err != nil {
				t.Fatal(err)
			}
			if want := refPage(needles, q); fmt.Sprint(ids(pg.Msgs)) != fmt.Sprint(want) {
				t.Fatalf("%+v:\n got %v\nwant %v", q, ids(pg.Msgs), want)
			}
			if pg.Count != len(needles) || pg.Inexact {
				t.Fatalf("count %d inexact %v, want %d", pg.Count, pg.Inexact, len(needles))
			}
		}
		// From one author only.
		pg, err := Search(tx, alice, UserPeer(bob), "", bob, HistoryQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range pg.Msgs {
			if m.From != bob {
				t.Fatalf("from filter let %+v through", m)
			}
		}
		if len(pg.Msgs) == 0 || len(pg.Msgs) == len(all) {
			t.Fatalf("from filter: %d of %d", len(pg.Msgs), len(all))
		}
		// Another user's view of the same ids finds nothing of alice's.
		pg, err = Search(tx, carol, UserPeer(bob), "needle", 0, HistoryQuery{})
		if err != nil || len(pg.Msgs) != 0 {
			t.Fatalf("carol: %v %v", pg.Msgs, err)
		}
		return nil
	})
}

func TestGetMessagesIsPerBox(t *testing.T) {
	f := newFixture(t, alice, bob, carol)
	f.send(alice, bob, "mine")
	f.view(func(tx storage.Reader) error {
		ms, err := GetMessages(tx, carol, []int{1, 2})
		if err != nil || ms[0] != nil || ms[1] != nil {
			t.Fatalf("carol sees %v %v", ms, err)
		}
		ms, err = GetMessages(tx, bob, []int{1, 0, -5})
		if err != nil || ms[0] == nil || ms[0].Text != "mine" || ms[1] != nil || ms[2] != nil {
			t.Fatalf("bob sees %v %v", ms, err)
		}
		return nil
	})
}
