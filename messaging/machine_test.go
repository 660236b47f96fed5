package messaging

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

func openMachine(t testing.TB, n Notifier) (*Machine, *storage.DB) {
	t.Helper()
	db, err := storage.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return NewMachine(db.Table("msg"), n), db
}

// appendCmd appends n one-pts updates for a user; a test-only command.
type appendCmd struct {
	uid  int64
	n    int
	fail bool
}

func (appendCmd) Kind() string { return "test.append" }

func (c appendCmd) apply(tx *storage.Txn, env Env) (any, error) {
	var evs []Event
	for i := 0; i < c.n; i++ {
		ev, err := AppendUpdate(tx, c.uid, env.Now, 1, func(pts int) ([]byte, error) {
			return []byte{byte(pts)}, nil
		})
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	if c.fail {
		return nil, ErrRejected
	}
	return Applied{Result: len(evs), Events: evs}, nil
}

type recordNotifier struct{ events []Event }

func (r *recordNotifier) Notify(ev []Event) { r.events = append(r.events, ev...) }

func TestUpdateLogIsGaplessAndAtomic(t *testing.T) {
	rec := &recordNotifier{}
	m, _ := openMachine(t, rec)
	ctx := context.Background()
	uid := UserID(1, 1)
	if _, err := m.Apply(ctx, appendCmd{uid: uid, n: 3}, Env{Now: 100}); err != nil {
		t.Fatal(err)
	}
	// A failing command leaves no trace and notifies nobody.
	if _, err := m.Apply(ctx, appendCmd{uid: uid, n: 2, fail: true}, Env{Now: 101}); !errors.Is(err, ErrRejected) {
		t.Fatalf("failing command: %v", err)
	}
	if _, err := m.Apply(ctx, appendCmd{uid: uid, n: 2}, Env{Now: 102}); err != nil {
		t.Fatal(err)
	}
	if len(rec.events) != 5 || rec.events[4].Pts != 5 {
		t.Fatalf("events: %+v", rec.events)
	}
	err := m.View(func(tx storage.Reader) error {
		recs, err := UpdatesSince(tx, uid, 1, 10)
		if err != nil {
			return err
		}
		if len(recs) != 4 {
			t.Fatalf("since 1: %d records, want 4", len(recs))
		}
		for i, r := range recs {
			if r.Pts != i+2 || r.Update[0] != byte(i+2) {
				t.Fatalf("record %d: %+v", i, r)
			}
		}
		recs, _ = UpdatesSince(tx, uid, 1, 2)
		if len(recs) != 2 || recs[1].Pts != 3 {
			t.Fatalf("limited: %+v", recs)
		}
		st, _ := GetState(tx, uid)
		if st.Pts != 5 || st.Date != 102 {
			t.Fatalf("state %+v", st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAccessHashesArePerViewer(t *testing.T) {
	a := NewAccessHashes([]byte("0123456789abcdef"))
	u1, u2, target := UserID(1, 1), UserID(1, 2), UserID(1, 3)
	h := a.For(u1, target)
	if !a.Check(u1, target, h) || a.Check(u2, target, h) || a.Check(u1, target, h+1) {
		t.Fatal("access hash check")
	}
	if HomeDC(target) != 1 || target >= 1<<52 {
		t.Fatalf("id %d", target)
	}
}

// TestConcurrentCommandsCommitInGroups runs many commands at once, some of
// them rejected, so that they share transactions: the accepted ones must
// all land exactly once with gapless pts, the rejected ones leave nothing,
// and events reach the notifier in pts order.
func TestConcurrentCommandsCommitInGroups(t *testing.T) {
	rec := &recordNotifier{}
	m, _ := openMachine(t, rec)
	uid := UserID(1, 7)
	const n = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := m.Apply(context.Background(), appendCmd{uid: uid, n: 2, fail: i%5 == 0}, Env{Now: int64(i)})
			switch {
			case err == nil:
				mu.Lock()
				accepted++
				mu.Unlock()
			case !errors.Is(err, ErrRejected):
				t.Errorf("command %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if accepted != n-n/5 {
		t.Fatalf("%d commands accepted, want %d", accepted, n-n/5)
	}
	if len(rec.events) != 2*accepted {
		t.Fatalf("%d events, want %d", len(rec.events), 2*accepted)
	}
	for i, ev := range rec.events {
		if ev.Pts != i+1 {
			t.Fatalf("event %d has pts %d: notified out of order", i, ev.Pts)
		}
	}
	err := m.View(func(tx storage.Reader) error {
		st, err := GetState(tx, uid)
		if err != nil {
			return err
		}
		if st.Pts != 2*accepted {
			t.Fatalf("pts %d, want %d", st.Pts, 2*accepted)
		}
		recs, err := UpdatesSince(tx, uid, 0, 10*n)
		if err != nil {
			return err
		}
		for i, r := range recs {
			if r.Pts != i+1 {
				t.Fatalf("log entry %d has pts %d", i, r.Pts)
			}
		}
		if len(recs) != 2*accepted {
			t.Fatalf("log has %d entries, want %d", len(recs), 2*accepted)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
