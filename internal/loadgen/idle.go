package loadgen

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/telegram"
)

// MemSample is the node's memory as its /metrics reported it.
type MemSample struct {
	RSS         float64 // process_resident_memory_bytes
	HeapInuse   float64 // go_memstats_heap_inuse_bytes
	HeapAlloc   float64 // go_memstats_heap_alloc_bytes
	StackInuse  float64 // go_memstats_stack_inuse_bytes
	Goroutines  float64 // go_goroutines
	ConnsActive float64 // mtnode_connections_active
	ConnsTotal  float64 // mtnode_connections_total, all transports
	// AfterGC is true if a garbage collection was seen to finish just
	// before the sample, so the heap figures are live data plus at most a
	// few milliseconds of allocation.
	AfterGC bool
}

func memSample(s samples) MemSample {
	return MemSample{
		RSS: s[mRSS], HeapInuse: s[mHeapInuse], HeapAlloc: s[mHeapAlloc],
		StackInuse: s[mStackInuse], Goroutines: s[mGoroutines], ConnsActive: s[mConnsActive],
		ConnsTotal: connsTotal(s),
	}
}

// IdleReport is the memory a node spends per idle authorized connection.
type IdleReport struct {
	Conns int
	// Setup is how long opening them took (key exchange and
	// initConnection each).
	Setup time.Duration
	// Before and After are sampled right after a garbage collection,
	// without and with the Conns idle connections.
	Before, After MemSample
	// Per-connection deltas (After - Before) / Conns, in bytes (goroutines
	// for GoroutinesPerConn).
	RSSPerConn, HeapInusePerConn, HeapAllocPerConn, StackPerConn, GoroutinesPerConn float64
	// NudgeConns pinged in a closed loop until the node collected garbage,
	// before each sample; NudgePings is how many pings that took in all.
	NudgeConns int
	NudgePings int64
}

// Bounds of one GC nudge.
const (
	nudgeConns    = 4
	nudgeTimeout  = 90 * time.Second
	nudgeMaxPings = 5_000_000
	nudgePoll     = 10 * time.Millisecond
	// sweepSettle lets the background sweeper return freed spans before the
	// sample is read; the node is idle meanwhile.
	sweepSettle = 500 * time.Millisecond
)

func runIdle(ctx context.Context, rs *runState) (rep *IdleReport, err error) {
	t, opts, log := rs.t, rs.opts, rs.log
	rep = &IdleReport{Conns: opts.IdleConns, NudgeConns: nudgeConns}
	// The nudge clients are open for both samples, so they cancel out.
	nudge := newFleet(t, opts.Transport, rs.pool)
	defer func() {
		if cerr := nudge.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// Keys for all clients are made first: their creation's garbage is
	// collected before the first sample, and the clients' lives stay
	// short (see runPingLevel).
	if err := rs.pool.reserve(ctx, nudgeConns+opts.IdleConns, opts.SetupTimeout); err != nil {
		return nil, err
	}
	if err := nudge.grow(ctx, nudgeConns, nudgeConns, opts.SetupTimeout); err != nil {
		return nil, fmt.Errorf("open nudge connections: %w", err)
	}
	if err := rs.resolvePing(ctx, nudge.clients[0]); err != nil {
		return nil, err
	}
	before, n, err := sampleAfterGC(ctx, t, nudge.clients, rs.pinger)
	if err != nil {
		return nil, err
	}
	rep.Before, rep.NudgePings = before, n

	idle := newFleet(t, opts.Transport, rs.pool)
	defer func() {
		if cerr := idle.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	log.Info("opening idle connections", "conns", opts.IdleConns)
	t0 := time.Now()
	if err := idle.grow(ctx, opts.IdleConns, opts.SetupConcurrency, opts.SetupTimeout); err != nil {
		return nil, fmt.Errorf("open %d idle connections: %w", opts.IdleConns, err)
	}
	rep.Setup = time.Since(t0)
	after, n, err := sampleAfterGC(ctx, t, nudge.clients, rs.pinger)
	if err != nil {
		return nil, err
	}
	rep.After, rep.NudgePings = after, rep.NudgePings+n
	if got := after.ConnsActive - before.ConnsActive; int(got) != opts.IdleConns {
		return rep, fmt.Errorf("node reports %v more connections, want %d", got, opts.IdleConns)
	}
	if got := after.ConnsTotal - before.ConnsTotal; int(got) != opts.IdleConns {
		return rep, fmt.Errorf("node accepted %v connections, want %d: clients redialled", got, opts.IdleConns)
	}
	if err := idle.lostErr(); err != nil {
		return rep, err
	}
	per := func(a, b float64) float64 { return (a - b) / float64(opts.IdleConns) }
	rep.RSSPerConn = per(after.RSS, before.RSS)
	rep.HeapInusePerConn = per(after.HeapInuse, before.HeapInuse)
	rep.HeapAllocPerConn = per(after.HeapAlloc, before.HeapAlloc)
	rep.StackPerConn = per(after.StackInuse, before.StackInuse)
	rep.GoroutinesPerConn = per(after.Goroutines, before.Goroutines)
	return rep, nil
}

// sampleAfterGC makes the node collect garbage and samples its memory
// right after. The node has no endpoint to force a GC, and an idle node
// allocates too little to start one (its Badger tables alone set the first
// heap goal near 200 MB), so the nudge clients ping in a closed loop (the
// node's per-ping garbage fills the heap) until go_gc_duration_seconds_count
// moves; then they stop and, after the sweeper settles, the sample is read.
// What the last poll interval of pings allocated is still counted: a few
// hundred KB at most, reported per connection as noise.
func sampleAfterGC(ctx context.Context, t *target, clients []*telegram.Client, ping pinger) (MemSample, int64, error) {
	s0, err := t.metrics.scrape(ctx)
	if err != nil {
		return MemSample{}, 0, err
	}
	gc0 := s0[mGCCount]
	var (
		stop   atomic.Bool
		pings  atomic.Int64
		wg     sync.WaitGroup
		pingMu sync.Mutex
		pErr   error
	)
	nctx, cancel := context.WithTimeout(ctx, nudgeTimeout)
	defer cancel()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && pings.Add(1) <= nudgeMaxPings {
				if err := ping(nctx, c); err != nil {
					if nctx.Err() == nil {
						pingMu.Lock()
						pErr = err
						pingMu.Unlock()
					}
					return
				}
			}
		}()
	}
	collected := false
	tick := time.NewTicker(nudgePoll)
	for !collected && nctx.Err() == nil && pings.Load() < nudgeMaxPings {
		select {
		case <-tick.C:
		case <-nctx.Done():
			continue
		}
		s, err := t.metrics.scrape(nctx)
		if err != nil {
			continue
		}
		collected = s[mGCCount] > gc0
	}
	tick.Stop()
	stop.Store(true)
	wg.Wait()
	if pErr != nil {
		return MemSample{}, 0, fmt.Errorf("nudge ping: %w", pErr)
	}
	if err := ctx.Err(); err != nil {
		return MemSample{}, 0, err
	}
	select {
	case <-time.After(sweepSettle):
	case <-ctx.Done():
		return MemSample{}, 0, ctx.Err()
	}
	s, err := t.metrics.scrape(ctx)
	if err != nil {
		return MemSample{}, 0, err
	}
	m := memSample(s)
	m.AfterGC = collected
	return m, min(pings.Load(), nudgeMaxPings), nil
}
