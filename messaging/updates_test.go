package messaging

import (
	"log/slog"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

// logEntries counts uid's update log entries and returns the lowest pts.
func logEntries(t *testing.T, tab *storage.Table, uid int64) (n, lowest int) {
	t.Helper()
	if err := tab.View(func(tx *storage.Txn) error {
		recs, err := UpdatesSince(tx, uid, 0, 1<<30)
		n = len(recs)
		if n > 0 {
			lowest = recs[0].Pts
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n, lowest
}

func appendN(t *testing.T, tab *storage.Table, uid int64, n, count int) {
	t.Helper()
	for done := 0; done < n; {
		batch := min(1000, n-done)
		if err := tab.Update(func(tx *storage.Txn) error {
			for range batch {
				if _, err := AppendUpdate(tx, uid, 1, count, func(pts int) ([]byte, error) { return []byte{1}, nil }); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		done += batch
	}
}

// TestUpdateLogTrimmed: the log keeps every entry getDifference can still
// ask for (pts above Pts-UpdateLogKeep) and drops the older ones as pts
// crosses each multiple of updateTrimEvery.
func TestUpdateLogTrimmed(t *testing.T) {
	db, err := storage.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tab := db.Table("m")
	const uid = 42
	for _, step := range []struct{ appends, count int }{{5000, 1}, {7000, 1}, {300, 7}, {4000, 1}} {
		appendN(t, tab, uid, step.appends, step.count)
		var st State
		tab.View(func(tx *storage.Txn) error { st, err = GetState(tx, uid); return err })
		n, lowest := logEntries(t, tab, uid)
		// Everything getDifference may replay is there: a client at
		// Pts-UpdateLogKeep gets entries from the next pts on.
		var need int
		tab.View(func(tx *storage.Txn) error {
			recs, err := UpdatesSince(tx, uid, max(0, st.Pts-UpdateLogKeep), 1<<30)
			for _, r := range recs {
				need += r.PtsCount
			}
			return err
		})
		if want := min(st.Pts, UpdateLogKeep); need != want {
			t.Fatalf("pts %d: entries after pts %d span %d pts, want %d", st.Pts, st.Pts-UpdateLogKeep, need, want)
		}
		// And little more: at most one trim interval (plus an entry
		// spanning the boundary) beyond the window.
		if st.Pts > UpdateLogKeep+updateTrimEvery {
			if lowest <= st.Pts-UpdateLogKeep-updateTrimEvery-step.count {
				t.Fatalf("pts %d: entry at pts %d kept, %d entries", st.Pts, lowest, n)
			}
			if st.Trimmed < st.Pts-UpdateLogKeep-updateTrimEvery-step.count {
				t.Fatalf("pts %d: trimmed up to %d only", st.Pts, st.Trimmed)
			}
		}
	}
}

// TestUpdateLogTrimCatchesUp: a long log from before trimming is cut
// updateTrimBatch entries per pass, never more in one transaction.
func TestUpdateLogTrimCatchesUp(t *testing.T) {
	db, err := storage.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tab := db.Table("m")
	const uid, old = 7, 30000
	if err := tab.Update(func(tx *storage.Txn) error {
		for pts := 1; pts <= old; pts++ {
			if err := putJSON(tx, key("upd", int64(uid), pts), UpdateRecord{Pts: pts, PtsCount: 1, Update: []byte{1}}); err != nil {
				return err
			}
		}
		return PutState(tx, uid, State{Pts: old, NextMsgID: 1})
	}); err != nil {
		t.Fatal(err)
	}
	// The next crossing of a multiple of updateTrimEvery runs one pass.
	appendN(t, tab, uid, updateTrimEvery-old%updateTrimEvery, 1)
	n, lowest := logEntries(t, tab, uid)
	if lowest != updateTrimBatch+1 {
		t.Fatalf("after one pass the log starts at pts %d (%d entries), want %d", lowest, n, updateTrimBatch+1)
	}
	// Passes go on until the window is reached.
	appendN(t, tab, uid, 8*updateTrimEvery, 1)
	var st State
	tab.View(func(tx *storage.Txn) error { st, err = GetState(tx, uid); return err })
	if n, lowest = logEntries(t, tab, uid); lowest <= st.Pts-UpdateLogKeep-updateTrimEvery {
		t.Fatalf("pts %d: log still starts at %d (%d entries)", st.Pts, lowest, n)
	}
}
