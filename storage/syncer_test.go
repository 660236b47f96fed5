package storage

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSyncerCoversEveryWrite: concurrent callers share syncs, and each
// returns only after a sync that started after its write has ended.
func TestSyncerCoversEveryWrite(t *testing.T) {
	s := syncer{}
	s.cond = sync.NewCond(&s.mu)
	var written, durable, syncs atomic.Int64
	doSync := func() error {
		at := written.Load()
		syncs.Add(1)
		time.Sleep(2 * time.Millisecond)
		for {
			d := durable.Load()
			if at <= d || durable.CompareAndSwap(d, at) {
				return nil
			}
		}
	}
	const callers, rounds = 32, 20
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				w := written.Add(1)
				if err := s.do(doSync); err != nil {
					t.Error(err)
					return
				}
				if d := durable.Load(); d < w {
					t.Errorf("write %d returned with only %d durable", w, d)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := syncs.Load(); n >= callers*rounds/2 {
		t.Errorf("%d syncs for %d writes: not shared", n, callers*rounds)
	}
}

// TestSyncerReportsFailure: a failed sync fails its callers, and the next
// good one serves the next callers.
func TestSyncerReportsFailure(t *testing.T) {
	s := syncer{}
	s.cond = sync.NewCond(&s.mu)
	boom := errors.New("disk gone")
	if err := s.do(func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed sync returned %v", err)
	}
	if err := s.do(func() error { return nil }); err != nil {
		t.Fatalf("good sync returned %v", err)
	}
}
